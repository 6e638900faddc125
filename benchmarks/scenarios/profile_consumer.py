"""Where the consumer's CPU goes at saturation: py-spy over ``nexanest consume`` (``make bench-profile``).

    python -m benchmarks.scenarios.profile_consumer [--ticks 300000] [--rate-hz 100] [--native]

The whole backlog is in Kafka before it starts, so it runs flat out. Shares are
of the consumer's CPU (py-spy samples running threads), start-up imports left
out; the raw stacks go to ``benchmarks/results/profile-<time>.txt``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from benchmarks.harness.report import RESULTS_DIR, table
from benchmarks.harness.run import BenchError, Run, main
from benchmarks.harness.sampling import ROOT, consume_argv, run_sampled

PY_SPY = ROOT / ".venv-bench" / "bin" / "py-spy"
#: Areas, matched against a frame's file path from the innermost frame outwards.
AREAS = {
    "schemas/ticks.py": "msgspec decode",
    "pipeline/validation.py": "validation",
    "pipeline/sinks/copy_binary.py": "COPY encoding",
    "pipeline/sinks/timescale.py": "COPY sink",
    "pipeline/sinks/redis_quotes.py": "Redis quotes",
    **{f"pipeline/{m}.py": "consumer loop" for m in ("runner", "take", "batch", "consumer_position")},
    **{f"{lib}/": lib for lib in ("asyncpg", "aiokafka", "redis", "prometheus_client", "structlog", "asyncio")},
}


def summarize(raw: str, top: int) -> dict[str, Any]:
    self_time, areas, total = Counter[str](), Counter[str](), 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or any(f.startswith("_find_and_load ") for f in frames):
            continue  # importing modules at start-up
        total += int(count)
        self_time[frames[-1]] += int(count)
        files = [f[f.rfind("(") + 1 : f.rfind(")")].rsplit(":", 1)[0] for f in reversed(frames)]
        area = next((name for file in files for pattern, name in AREAS.items() if pattern in file), "other")
        areas[area] += int(count)

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    return {"samples": total, "areas": share(areas), "top_self": share(self_time)}


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    if not PY_SPY.exists():
        raise BenchError(f"no {PY_SPY.relative_to(ROOT)}: make bench-venv")
    settings, source = await run.backlog("profile", args.ticks, time.time_ns() - 3600 * 10**9)
    raw = RESULTS_DIR / f"profile-{time.strftime('%Y%m%dT%H%M%S')}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(PY_SPY), "record", "--format", "raw", "--function", "--rate", str(args.rate_hz), "--output", str(raw)]
    proc = await run_sampled([*argv, *(["--native"] if args.native else []), "--", *consume_argv(3)], run.env(settings))
    proc.check_exit()
    run.check("profile", "rows the consumer reports written", args.ticks, proc.consumed()["written"])
    await run.stored_once("profile", source, args.ticks)
    return {"raw_stacks": str(raw.relative_to(ROOT)), **summarize(raw.read_text(), args.top)}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Profile `{result['run_id']}`: {result['samples']:,} samples of the consumer's CPU", ""]
    for title, key in (("area", "areas"), ("self time", "top_self")):
        lines += [*table(f"share|{title}", ((f"{p}%", f"`{k}`") for k, p in result[key]), "rl"), ""]
    return "\n".join(lines)


OPTIONS = {
    "ticks": (300_000, None, "ticks pre-filled"),
    "rate_hz": (100, None, "py-spy samples per second"),
    "native": (False, None, "include C/Cython frames (py-spy --native)"),
    "top": (20, None, "functions listed"),
}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
