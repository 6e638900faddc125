"""Tick-to-quote latency, stage by stage, as a user of the real commands sees it.

    python -m benchmarks.scenarios.quote_latency [--rates 5000,20000] [--seconds 30] [--modes inline,fast_path]

Each (mode, rate) runs the real processes, each in its own process as deployed:
``nexanest feed run synthetic --rate R`` and ``nexanest consume`` (mode
``inline``: the consumer writes quotes between its COPY work), plus
``nexanest quotes`` (mode ``fast_path``: the quote fast path in a process and
consumer group of its own); ``feed``: the feed alone. ``MODE@/path/to/a/clone``
runs that clone's code (and ``.venv``), e.g. main's, for a before and after.
The processes write into the run's scratch database, topics and Redis keys.

Every latency counts from the tick's own timestamp (``ts_ns``, set when the
feed created it), and is split where it can be observed from outside:

* ``appended``: the Kafka record's timestamp (the producer's append, ms) -
  feed pacing and the publisher's batching;
* ``fetched``: when an idle probe consumer (partition 0 only) receives the
  record - the above plus the broker round trip;
* ``flush_started``: the quote's ``updated_ns`` (when the writer started its
  Redis round trip) - the above plus the writer's fetch and its validation;
* ``visible``: when a subscriber of the quote channels receives the update -
  what a user of the quote stream sees (the whole path).

Plus the histogram p99 bucket the writers report (``nexanest_quote_latency_seconds``).
Observations in the first ``--warmup`` seconds (group join, start-up) are dropped;
the CPU seconds of each process from its start to the end of the feed.
Take the benchmark lock around it (``flock /tmp/nexanest-bench.lock ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.harness.run import Run, main, publish
from benchmarks.harness.sampling import ROOT, Processes, cpu_s, percentile
from nexanest.pipeline.kafka import connection_options
from nexanest.pipeline.sinks.redis_quotes import parse_quote_update, quote_channel
from nexanest.producers.feeds.synthetic import symbol_names
from nexanest.schemas.ticks import decode_tick

PORTS = {"consume": 9178, "quotes": 9179}
SYMBOLS = 50
OPTIONS = {
    "rates": ([5000, 20000], None, "offered ticks/s"),
    "modes": ("inline,fast_path", None, "comma-separated: inline, fast_path, feed (each may be MODE@CLONE)"),
    "seconds": (30.0, None, "the feed's run per mode and rate"),
    "warmup": (5.0, None, "seconds of observations dropped at the start"),
}


def _histogram(port: int) -> dict[float, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("nexanest_quote_latency_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _p99_bucket(before: dict[float, float], after: dict[float, float]) -> float | None:
    delta = sorted((le, c - before.get(le, 0.0)) for le, c in after.items())
    if not delta or delta[-1][1] <= 0:
        return None
    return 1000 * next(le for le, c in delta if c >= 0.99 * delta[-1][1])


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    p50, p99 = (round(percentile(values, q), 2) for q in (50, 99))
    return {"n": len(values), "p50_ms": p50, "p99_ms": p99, "max_ms": round(max(values), 2)}


async def one(run: Run, args: argparse.Namespace, variant: str, rate: int) -> dict[str, Any]:
    mode, _, other = variant.partition("@")
    root = Path(other) if other else ROOT
    settings = run.settings(f"{mode}{rate}", run.topic(f"{mode}{rate}"))
    await publish(settings.kafka, [], "bench")  # creates the topics
    cli = [str(root / ".venv/bin/python"), "-m", "nexanest.cli.main"]
    running: dict[str, tuple[Processes, asyncio.Future[Any]]] = {}
    commands = {"feed": [], "inline": ["consume"], "fast_path": ["consume", "quotes"]}[mode]
    r = redis.Redis.from_url(settings.redis.url.get_secret_value(), db=settings.redis.db_quotes)
    pubsub, probe = (
        r.pubsub(),
        AIOKafkaConsumer(**connection_options(settings.kafka, "bench-probe"), enable_auto_commit=False),
    )
    visible: list[tuple[int, float, float]] = []  # (recv_ns, visible_ms, flush_started_ms)
    kafka: list[tuple[int, float, float]] = []  # (recv_ns, appended_ms, fetched_ms)
    done = asyncio.Event()

    async def listen() -> None:
        while not done.is_set():
            if (m := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)) is not None:
                now, u = time.time_ns(), parse_quote_update(m["data"])
                visible.append((now, (now - u.ts_ns) / 1e6, (u.updated_ns - u.ts_ns) / 1e6))

    async def fetch() -> None:
        while not done.is_set():
            got = await probe.getmany(timeout_ms=200)
            now = time.time_ns()
            for msg in (msg for messages in got.values() for msg in messages):
                ts = decode_tick(msg.value).ts_ns
                kafka.append((now, msg.timestamp - ts / 1e6, (now - ts) / 1e6))

    try:
        for command in commands:  # each up (its metrics served) before the next
            group = Processes(
                [[*cli, command]], run.env(settings, NEXANEST_METRICS__PORT=str(PORTS[command])), cwd=root
            )
            running[command] = group, asyncio.ensure_future(group.wait(120 + 3 * args.seconds))
            deadline = time.monotonic() + 60
            while not _histogram(PORTS[command]):
                if running[command][1].done() or time.monotonic() > deadline:
                    raise RuntimeError(f"`nexanest {command}` did not serve its metrics within 60 s")
                await asyncio.sleep(0.2)
        await asyncio.sleep(4.0)  # group joins (the broker's initial rebalance delay) and the quote rebuild
        await pubsub.subscribe(*(quote_channel(settings.redis.quote_key_prefix, s) for s in symbol_names(args.symbols)))
        await probe.start()
        tp = TopicPartition(settings.kafka.ticks_topic, 0)
        probe.assign([tp])
        await probe.seek_to_end(tp)
        listeners = [asyncio.create_task(listen()), asyncio.create_task(fetch())]
        before = {c: _histogram(PORTS[c]) for c in running}
        started_ns = time.time_ns()
        feed = ["feed", "run", "synthetic", "--rate", str(rate), "--duration", str(args.seconds)]
        feeder = Processes([[*cli, *feed, "--symbols", str(args.symbols)]], run.env(settings), cwd=root)
        (fed,) = await feeder.wait(120 + 3 * args.seconds)
        fed.check_exit()
        await asyncio.sleep(1.0)  # the last ticks reach Redis
        after = {c: _histogram(PORTS[c]) for c in running}
        done.set()
        await asyncio.gather(*listeners)
        cpu = {c: cpu_s(group.procs[0].popen.pid, reaped_children=False) for c, (group, _) in running.items()}
        for group, _ in running.values():
            group.terminate()  # each finishes what it has in hand and exits 0
        for _, waiting in running.values():
            (await waiting)[0].check_exit()
    finally:
        for group, _ in running.values():
            group.kill()  # those still running: after an error
        await probe.stop()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await r.aclose()
    since = started_ns + int(args.warmup * 1e9)
    out: dict[str, Any] = {"mode": variant, "rate": rate, "seconds": args.seconds}
    out["appended"] = _summary([a for t, a, _ in kafka if t >= since])
    out["fetched"] = _summary([f for t, _, f in kafka if t >= since])
    out["flush_started"] = _summary([f for t, _, f in visible if t >= since])
    out["visible"] = _summary([v for t, v, _ in visible if t >= since])
    out["histogram_p99_le_ms"] = {PORTS[c]: _p99_bucket(before[c], after[c]) for c in running}
    return out | {"cpu_s": {c: round(v or 0.0, 2) for c, v in cpu.items()} | {"feed": round(fed.cpu_s, 2)}}


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    return {"runs": [await one(run, args, mode, rate) for rate in args.rates for mode in args.modes.split(",")]}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
