"""Tick-to-quote latency, stage by stage, as a user of the real commands sees it.

    python -m benchmarks.scenarios.quote_latency [--rates 5000,20000] [--seconds 30] [--modes inline,fast_path]

Each (mode, rate) runs the real processes, each in its own process as deployed:
``nexanest feed run synthetic --rate R`` and ``nexanest consume`` (mode
``inline``: the consumer writes quotes between its COPY work), plus
``nexanest quotes`` (mode ``fast_path``: the quote fast path in a process and
consumer group of its own). Topics, group, Redis keys and databases are
namespaced per run (the test databases, the test Redis databases), so nothing
of the user's data is touched.

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
Observations in the first ``--warmup`` seconds (group join, start-up) are dropped.
Take the benchmark lock around it (``flock /tmp/nexanest-bench.lock ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.harness.sampling import percentile
from nexanest.ops.migrate import migrate
from nexanest.pipeline.kafka import ensure_topics
from nexanest.pipeline.settings import load_settings, namespace_environment, namespaced, separate_databases
from nexanest.pipeline.sinks.redis_quotes import parse_quote_update, quote_channel
from nexanest.producers.feeds.synthetic import symbol_names
from nexanest.schemas.ticks import decode_tick

ROOT = Path(__file__).resolve().parents[2]
CONSUMER_PORT, QUOTES_PORT = 9178, 9179


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
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(max(values), 2),
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


async def _wait_port(port: int, proc: asyncio.subprocess.Process, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not _histogram(port):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the process serving :{port} did not come up")
        await asyncio.sleep(0.2)


async def one(variant: str, rate: int, seconds: float, warmup: float, symbols: int) -> dict[str, Any]:
    mode, _, other = variant.partition("@")
    root = Path(other) if other else ROOT  # mode@/path/to/a/clone: that clone's code (and .venv), e.g. main
    ns = f"qlat-{secrets.token_hex(3)}"
    settings = separate_databases(namespaced(load_settings(), ns))
    env = {**os.environ, **namespace_environment(settings)}
    procs: list[asyncio.subprocess.Process] = []
    names: list[str] = []
    await ensure_topics(settings.kafka)

    async def start(*argv: str, port: int) -> asyncio.subprocess.Process:
        cli = [str(root / ".venv/bin/python"), "-m", "nexanest.cli.main"]
        p = await asyncio.create_subprocess_exec(
            *cli,
            *argv,
            cwd=root,
            env=env | {"NEXANEST_METRICS__PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        procs.append(p)
        names.append(argv[0])
        return p

    ports = []
    if mode != "feed":  # feed: no consumer, only the producer's side is measured
        consumer = await start("consume", port=CONSUMER_PORT)
        await _wait_port(CONSUMER_PORT, consumer)
        ports.append(CONSUMER_PORT)
    if mode == "fast_path":
        quotes = await start("quotes", port=QUOTES_PORT)
        await _wait_port(QUOTES_PORT, quotes)
        ports.append(QUOTES_PORT)
    await asyncio.sleep(4.0)  # group joins (the broker's initial rebalance delay) and the quote rebuild

    r = redis.Redis.from_url(settings.redis.url.get_secret_value(), db=settings.redis.db_quotes)
    pubsub = r.pubsub()
    prefix = settings.redis.quote_key_prefix
    await pubsub.subscribe(*(quote_channel(prefix, s) for s in symbol_names(symbols)))
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await probe.start()
    tp = TopicPartition(settings.kafka.ticks_topic, 0)
    probe.assign([tp])
    await probe.seek_to_end(tp)

    visible: list[tuple[int, float, float]] = []  # (recv_ns, visible_ms, flush_started_ms)
    kafka: list[tuple[int, float, float]] = []  # (recv_ns, appended_ms, fetched_ms)
    done = asyncio.Event()

    async def listen() -> None:
        while not done.is_set():
            m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if m is None:
                continue
            now = time.time_ns()
            u = parse_quote_update(m["data"])
            visible.append((now, (now - u.ts_ns) / 1e6, (u.updated_ns - u.ts_ns) / 1e6))

    async def fetch() -> None:
        while not done.is_set():
            got = await probe.getmany(timeout_ms=200)
            now = time.time_ns()
            for messages in got.values():
                for msg in messages:
                    ts = decode_tick(msg.value).ts_ns
                    kafka.append((now, msg.timestamp - ts / 1e6, (now - ts) / 1e6))

    listeners = [asyncio.create_task(listen()), asyncio.create_task(fetch())]
    before = {port: _histogram(port) for port in ports}
    started_ns = time.time_ns()
    feed = await start(
        "feed", "run", "synthetic", "--rate", str(rate), "--duration", str(seconds), "--symbols", str(symbols), port=0
    )
    await feed.wait()
    await asyncio.sleep(1.0)  # the last ticks reach Redis
    after = {port: _histogram(port) for port in ports}
    done.set()
    await asyncio.gather(*listeners)
    await probe.stop()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await r.aclose()
    cpu = {name: _cpu_s(p.pid) for name, p in zip(names, procs, strict=True) if p.returncode is None}
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGINT)
    await asyncio.gather(*(p.wait() for p in procs))

    since = started_ns + int(warmup * 1e9)
    out: dict[str, Any] = {"mode": variant, "rate": rate, "seconds": seconds, "namespace": ns}
    out["appended"] = _summary([a for t, a, _ in kafka if t >= since])
    out["fetched"] = _summary([f for t, _, f in kafka if t >= since])
    out["flush_started"] = _summary([f for t, _, f in visible if t >= since])
    out["visible"] = _summary([v for t, v, _ in visible if t >= since])
    out["histogram_p99_le_ms"] = {p: _p99_bucket(before[p], after[p]) for p in ports}
    out["cpu_s"] = cpu  # each process's CPU seconds from its start to the end of the feed
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,20000")
    parser.add_argument("--modes", default="inline,fast_path")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--symbols", type=int, default=50)
    args = parser.parse_args()
    await migrate(separate_databases(load_settings()), ["timescale"])  # the test database, as the tests migrate it
    for rate in (int(x) for x in args.rates.split(",")):
        for mode in args.modes.split(","):
            result = await one(mode, rate, args.seconds, args.warmup, args.symbols)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
