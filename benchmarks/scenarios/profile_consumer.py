"""Where the consumer's CPU goes at saturation: py-spy over ``nexanest consume``.

    python -m benchmarks.scenarios.profile_consumer [--ticks 300000] [--symbols 300] [--rate-hz 100] [--native]
    make bench-profile

Fills a fresh topic with the suite's synthetic ticks (fixed seed), then runs
``nexanest consume --until-idle 3`` (the real command, exactly-once on, as
deployed) under ``py-spy record`` from ``.venv-bench``. The consumer starts with
the whole backlog in Kafka, so it runs flat out for the whole profile. Its rows
are counted before anything is reported, and removed afterwards with everything
else the run created (``bench.<run>`` topics, groups, Redis quotes, offsets).

py-spy samples only threads that are running, so the percentages are shares of
the consumer's CPU time, not of wall time; import-time samples (start-up) are
left out. Writes the raw collapsed stacks to ``benchmarks/results/profile-<time>.txt``
and a summary (top functions by self and inclusive time, and by area) to
``profile-<time>.json``, and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.harness.cleanup import clean_up, prepare_database
from benchmarks.harness.report import RESULTS_DIR, command_line
from benchmarks.harness.run import Run, feed_config
from benchmarks.harness.sampling import ROOT, run_sampled
from benchmarks.scenarios.limits import produce_feeds
from nexanest.pipeline.log import configure_logging
from nexanest.pipeline.settings import LogSettings, load_settings

PY_SPY = ROOT / ".venv-bench" / "bin" / "py-spy"
NEXANEST = Path(sys.executable).parent / "nexanest"

#: Areas, matched against a frame's file path from the innermost frame outwards;
#: the first frame that matches names the area of the sample.
AREAS: tuple[tuple[str, str], ...] = (
    ("schemas/ticks.py", "msgspec decode (schemas/ticks.py)"),
    ("pipeline/validation.py", "validation (pipeline/validation.py)"),
    ("pipeline/sinks/timescale.py", "rows + COPY call (pipeline/sinks/timescale.py)"),
    ("pipeline/sinks/redis_quotes.py", "Redis quotes (pipeline/sinks/redis_quotes.py)"),
    ("pipeline/sinks/dead_letter.py", "dead letters (pipeline/sinks/dead_letter.py)"),
    ("pipeline/runner.py", "consumer loop (pipeline/runner.py)"),
    ("asyncpg/", "asyncpg"),
    ("aiokafka/", "aiokafka"),
    ("redis/", "redis-py"),
    ("prometheus_client/", "prometheus_client"),
    ("structlog/", "structlog"),
    ("decimal", "decimal"),
    ("asyncio/", "asyncio"),
)


def _file(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``path/to/file.py``."""
    inside = frame[frame.rfind("(") + 1 : frame.rfind(")")]
    return inside.rsplit(":", 1)[0]


def summarize(raw: str, top: int) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = startup = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(f.startswith("_find_and_load ") for f in frames):
            startup += count  # importing modules at start-up
            continue
        total += count
        self_time[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
        area = next(
            (name for f in reversed(frames) for pattern, name in AREAS if pattern in _file(f)),
            "other",
        )
        areas[area] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": k, "percent": round(100 * v / total, 1)} for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "startup_samples_left_out": startup,
        "top_self": share(self_time),
        "top_inclusive": share(inclusive),
        "areas": share(areas),
    }


async def profile(args: argparse.Namespace) -> dict[str, Any]:
    bench = Run(load_settings(), "p")
    base = bench.base
    stamp = time.strftime("%Y%m%dT%H%M%S")
    raw_path = RESULTS_DIR / f"profile-{stamp}.txt"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        bench.base, _ = await prepare_database(base, bench.run_id)
        config = feed_config(args.ticks, args.symbols, args.seed, bench.source("p"), time.time_ns() - 3600 * 10**9)
        await produce_feeds(bench, {"p": config})
        settings = bench.settings("profile", bench.topic("p"))
        argv = [str(PY_SPY), "record", "--format", "raw", "--function", "--rate", str(args.rate_hz)]
        argv += ["--output", str(raw_path)] + (["--native"] if args.native else [])
        argv += ["--", str(NEXANEST), "consume", "--until-idle", "3"]
        result = await run_sampled(argv, bench.env(settings), timeout_s=900)
        if result.returncode != 0:
            raise RuntimeError(f"py-spy / nexanest consume exited {result.returncode}: {result.stderr[-2000:]}")
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith("consumed "))
        written = int(line.split(" rows written")[0].split()[-1].replace(",", ""))
        bench.check("profile", "rows the consumer reports written", args.ticks, written)
        bench.check(
            "profile",
            "rows in stock_prices",
            args.ticks,
            await bench.count_rows("stock_prices", config.source),
        )
    finally:
        cleanup = await clean_up(base, bench.run_id)
    summary = summarize(raw_path.read_text(), args.top)
    return {
        "benchmark": "profile_consumer",
        "run_id": bench.run_id,
        "command": command_line("benchmarks.scenarios.profile_consumer"),
        "ticks": args.ticks,
        "symbols": args.symbols,
        "rate_hz": args.rate_hz,
        "native": args.native,
        "wall_s_incl_startup_and_idle": result.wall_s,
        "consumer_line": line,
        "raw_stacks": str(raw_path.relative_to(ROOT)),
        "checks": bench.checks,
        "cleanup": cleanup,
        **summary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=300_000)
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate-hz", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--native", action="store_true", help="include C/Cython frames (py-spy --native)")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    if not PY_SPY.exists():
        print(f"{PY_SPY} not found: run `make bench-venv`", file=sys.stderr)
        return 2
    configure_logging(LogSettings(level="warning"))
    result = uvloop.run(profile(args))
    out = RESULTS_DIR / f"profile-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['consumer_line']}\n{result['samples']:,} samples of the consumer's CPU (start-up left out)\n")
    for title, key in (("by area", "areas"), ("self time", "top_self"), ("inclusive time", "top_inclusive")):
        print(f"-- {title}")
        for item in result[key]:
            print(f"{item['percent']:5.1f}%  {item['frame']}")
        print()
    print(f"JSON: {out}\nraw stacks: {result['raw_stacks']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
