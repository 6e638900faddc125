"""``nexanest produce``, ``consume`` and ``run``: arguments (unit); the producer's
life-cycle events, a real ``nexanest run`` in a child process, its output not a
terminal, and ``produce`` beside ``consume``, each serving its metrics (integration)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nexanest.cli.main import parse_args
from nexanest.cli.runtime import EXIT_USAGE
from nexanest.cli.stream import cmd_consume, cmd_produce, cmd_run, produce, synthetic_config
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.producers.feeds.synthetic import SyntheticConfig
from tests.prometheus import check_metrics, free_ports
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
    given = synthetic_config(parse_args(["run", "--source", "feed-a"]))
    assert given.source == "feed-a"
    assert given.seq_start > 0  # a reused tag counts from the clock: its earlier seqs would be dropped as re-sends


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


async def scrape(port: int) -> bytes | None:
    """The /metrics page on ``port``, or None while nothing answers there."""

    def get() -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return bytes(response.read())
        except OSError:
            return None

    return await asyncio.to_thread(get)


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition.decode())
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.mark.integration
async def test_produce_and_consume_run_side_by_side_each_on_its_own_metrics_port(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """The two-terminal workflow: `nexanest consume` in one, `nexanest produce` in
    the other, both serving metrics at once (the consumer's and the producer's
    ports of the map, no override), and the consumer's page passes promtool."""
    consumer_port, producer_port, run_port = free_ports(3)
    env = {**os.environ, **namespace_environment(isolated)}
    env.pop("NEXANEST_METRICS__PORT")  # the tests' override (0): each command takes its own port
    env |= {
        "NEXANEST_METRICS__CONSUMER_PORT": str(consumer_port),
        "NEXANEST_METRICS__PRODUCER_PORT": str(producer_port),
        "NEXANEST_METRICS__RUN_PORT": str(run_port),
    }
    topic, source = isolated.kafka.ticks_topic, f"side-{test_id}"
    await ensure_topics(isolated.kafka)
    producer = make_producer(isolated.kafka)
    await producer.start()
    try:  # three messages that are no ticks: a dead-letter reason to see
        for _ in range(3):
            await producer.send_and_wait(topic, b"\xc1", key=b"BAD")
    finally:
        await producer.stop()

    def nexanest(*argv: str) -> Coroutine[Any, Any, asyncio.subprocess.Process]:
        return asyncio.create_subprocess_exec(
            sys.executable, "-m", "nexanest.cli.main", *argv,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
        )  # fmt: skip

    consume = await nexanest("consume")
    produce: asyncio.subprocess.Process | None = None
    try:
        async with asyncio.timeout(120):
            while await scrape(consumer_port) is None:
                assert consume.returncode is None, (await consume.communicate())[1].decode()
                await asyncio.sleep(0.2)
            produce = await nexanest(
                "produce", "synthetic", "--symbols", "5", "--rate", "400", "--duration", "5", "--source", source
            )
            # Both serve at once, each its own metrics.
            while (
                value(samples(await scrape(producer_port) or b""), "nexanest_producer_ticks_total", topic=topic) is None
            ):
                assert produce.returncode is None, (await produce.communicate())[1].decode()
                await asyncio.sleep(0.2)
            assert consume.returncode is None
            out, err = await produce.communicate()
            assert produce.returncode == 0, err.decode()
            assert "unavailable" not in err.decode()
            published = int(re.search(r"published ([\d,]+) ticks", out.decode())[1].replace(",", ""))  # type: ignore[index]
            assert published > 0
            # The consumer stores them all; its page then shows the new metrics.
            while True:
                page = await scrape(consumer_port) or b""
                found = samples(page)
                if (value(found, "nexanest_sink_rows_written_total", sink="timescale") or 0) >= published:
                    break
                await asyncio.sleep(0.2)
        assert check_metrics(page) == ""
        lags = {
            dict(labels)["partition"]: v
            for (name, labels), v in found.items()
            if name == "nexanest_consumer_lag_seconds" and dict(labels)["topic"] == topic
        }
        assert lags
        assert all(0 <= lag < 120 for lag in lags.values()), lags
        assert (value(found, "nexanest_consumer_tick_to_row_seconds_count") or 0) >= 1
        # The Apache edition's pipeline rollups: fresh from the consumer's own batches.
        assert value(found, "nexanest_rollup_freshness_seconds", resolution="1m") is not None
        assert value(found, "nexanest_consumer_rejected_total", reason="undecodable") == 3
        assert value(found, "nexanest_consumer_rejected_total", reason="bad_price") == 0  # every reason, from 0
        consume.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(consume.communicate(), 120)
        assert await consume.wait() == 0, err.decode()  # (returncode, read anew: mypy narrowed it to None)
        assert "unavailable" not in err.decode()
    finally:
        for proc in (consume, produce):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    stored = await timescale_pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source)
    assert stored == published


def test_a_taken_metrics_port_names_the_setting_that_moves_it() -> None:
    """The error the two-terminal workflow used to end with, now naming the command's own setting
    (a child process: the command configures logging for its whole process)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "NEXANEST_METRICS__PORT"}
        env["NEXANEST_METRICS__PRODUCER_PORT"] = str(port)
        done = subprocess.run(
            [sys.executable, "-m", "nexanest.cli.main", "produce", "synthetic", "--count", "1"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == EXIT_USAGE
    assert f"metrics port {port} of the producer unavailable" in done.stderr
    assert "set NEXANEST_METRICS__PRODUCER_PORT (0 disables)" in done.stderr
