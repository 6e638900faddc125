"""``nexanest produce``, ``consume`` and ``run``: arguments (unit); the producer's
life-cycle events and a real ``nexanest run`` in a child process, its output
not a terminal (integration)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from nexanest.cli.main import parse_args
from nexanest.cli.stream import cmd_consume, cmd_produce, cmd_run, produce, synthetic_config
from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.producers.feeds.synthetic import SyntheticConfig
from tests.schemas.event_samples import assert_like_sample, event_of_row

REPO = Path(__file__).resolve().parents[2]


def test_stream_arguments() -> None:
    args = parse_args(["produce", "synthetic", "--symbols", "7", "--rate", "0", "--count", "10", "--start-ns", "5"])
    assert args.handler is cmd_produce
    config = synthetic_config(args)
    assert (config.symbols, config.rate, config.count, config.start_ns, config.duration_s) == (7, 0.0, 10, 5, None)
    assert parse_args(["consume", "--until-idle", "2.5"]).until_idle == 2.5
    assert parse_args(["consume"]).handler is cmd_consume
    args = parse_args(["run", "--duration", "3"])
    assert (args.handler, args.rate, args.symbols, args.duration) == (cmd_run, 2000.0, 50, 3.0)


def test_each_synthetic_run_gets_its_own_source_unless_given() -> None:
    first = synthetic_config(parse_args(["produce", "synthetic"])).source
    second = synthetic_config(parse_args(["produce", "synthetic"])).source
    assert first.startswith("synthetic-")
    assert second.startswith("synthetic-")
    assert first != second  # seq restarts at 0 each run: a shared tag would make ticks ambiguous
    assert synthetic_config(parse_args(["run", "--source", "feed-a"])).source == "feed-a"


@pytest.mark.integration
async def test_the_producer_reports_started_and_stopped_with_counts(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    config = SyntheticConfig(symbols=3, rate=0, count=250, seed=1, source=f"events-{test_id}", paced=False)
    assert await produce(isolated, config, asyncio.Event()) == 250
    rows = await timescale_pool.fetch(
        "SELECT * FROM system_events WHERE component = 'producer.synthetic' AND details->>'source' = $1 ORDER BY time",
        config.source,
    )
    for row in rows:
        assert_like_sample(event_of_row(row), "producer.synthetic")
    assert [(r["event_type"], r["severity"]) for r in rows] == [("started", "info"), ("stopped", "info")]
    started, stopped = (json.loads(r["details"]) for r in rows)
    assert (started["topic"], started["symbols"]) == (isolated.kafka.ticks_topic, 3)
    assert stopped["published"] == 250


LIVE_LINE = re.compile(r"in +([\d,]+)/s  out +([\d,]+)/s  rows written +([\d,]+)  dead-lettered +([\d,]+)  lag +[\d,]+")


@pytest.mark.integration
async def test_run_prints_one_plain_line_per_second_when_not_a_terminal_and_stops_on_sigint(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """The view off a terminal (a log, CI): plain lines, no escape codes. The test
    waits until a line shows rows written, then stops the run as Ctrl-C would."""
    source = f"run-{test_id}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nexanest.cli.main", "run", "--symbols", "3", "--rate", "300", "--source", source,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **namespace_environment(isolated)},
        cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):
            while True:
                raw = await proc.stdout.readline()
                assert raw, f"run ended early: {lines}, {(await proc.stderr.read()).decode() if proc.stderr else ''}"
                lines.append(raw.decode().rstrip("\n"))
                shown = LIVE_LINE.fullmatch(lines[-1])
                if shown and int(shown[3].replace(",", "")) > 0:
                    break
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    lines += out.decode().splitlines()
    assert lines[0].startswith(f"running: synthetic feed (3 symbols, 300 ticks/s, source {source})")
    assert "\x1b" not in "\n".join(lines)
    live = [LIVE_LINE.fullmatch(line) for line in lines[1:-1]]
    assert live
    assert all(live), lines
    stopped = re.fullmatch(r"stopped: ([\d,]+) rows written, 0 dead-lettered", lines[-1])
    assert stopped, lines[-1]
    written = int(stopped[1].replace(",", ""))
    assert written >= max(int(m[3].replace(",", "")) for m in live if m) > 0
    stored = await timescale_pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source)
    assert stored == written
