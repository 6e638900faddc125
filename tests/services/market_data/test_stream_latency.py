"""From a tick published to Kafka to its event on the quote stream, measured end to end
(integration; about 25 s).

    .venv/bin/pytest -p no:cacheprovider tests/services/market_data/test_stream_latency.py -s

The real path: this process publishes ticks to the test's own ``ticks`` topic
with the pipeline's producer settings, stamping each tick's ``ts_ns`` with the
wall clock as it is handed to the producer; ``nexanest consume`` runs in a
process of its own (as deployed: exactly-once, rollups) and writes the quotes,
whose script publishes each update; the market data service runs under uvicorn
on loopback in this process, and ten streams (1,000 symbols each) read its
server-sent events over TCP, taking the wall clock as each event is parsed.
Latency = arrival - ``ts_ns``; the event's ``updated_at`` (when the consumer
wrote the quote) splits it into Kafka + consumer and Redis pub/sub + service +
HTTP. The figures include whatever else the machine runs: the load average is
printed with them.

Each of the 10,000 ticks is of a symbol of its own, so every tick moves its
quote and must arrive as its own event, however the consumer batches them: the
test fails unless all of them do, each exactly once. (With fewer symbols, two
ticks of one symbol in one consumer batch move the quote once, by design: the
quote is the latest tick.) It prints the figures (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.schemas.ticks import Tick, encode_tick
from nexanest.services.market_data.app import build_app
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.tokens import SignedTokens
from tests.processes import end
from tests.services.market_data.conftest import events_of, served

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RATE = 1_000  # ticks per second
SECONDS = 10
#: One measured tick per symbol: no two ticks of a symbol can meet in one consumer
#: batch (the quote sink keeps the latest per symbol, so they would move it once),
#: however far the consumer falls behind.
SYMBOLS = RATE * SECONDS
STREAMS = 10
LIMITS = MarketDataLimits(max_stream_symbols=SYMBOLS // STREAMS, stream_queue=4 * SYMBOLS // STREAMS)


class QuoteEvent(msgspec.Struct):
    symbol: str
    ts_ns: int
    seq: int
    updated_at: str


def start_consumer(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **namespace_environment(settings), "NEXANEST_LOG__LEVEL": "warning"}
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "nexanest.cli.main", "consume"], cwd=REPO, env=env, stdout=sink, stderr=sink
        )


async def publish(producer: AIOKafkaProducer, topic: str, ticks: list[tuple[str, int]], source: str) -> list[int]:
    """Send ``(symbol, seq)`` ticks at ``RATE`` per second, each stamped as it is
    handed over; returns the stamps in order."""
    stamps = []
    started = time.monotonic()
    for n, (symbol, seq) in enumerate(ticks):
        due = started + n / RATE
        if (wait := due - time.monotonic()) > 0.001:
            await asyncio.sleep(wait)
        ts_ns = time.time_ns()
        stamps.append(ts_ns)
        tick = Tick(
            symbol=symbol,
            exchange="XLAT",
            price_e9=100 * 10**9 + seq,
            size_e9=10**9,
            ts_ns=ts_ns,
            source=source,
            seq=seq,
            bid_e9=100 * 10**9 + seq - 10**7,
            ask_e9=100 * 10**9 + seq + 10**7,
        )
        await producer.send(topic, encode_tick(tick), key=symbol.encode())
    await producer.flush()
    return stamps


async def follow(
    url: str, token: str, symbols: list[str], arrived: dict[tuple[str, int], tuple[int, int]], ready: asyncio.Event
) -> None:
    """One stream: record (arrival ns, written-to-Redis ns) per (symbol, seq)."""
    decode = msgspec.json.Decoder(QuoteEvent).decode
    async with (
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=60)) as http,
        http.stream(
            "GET", f"/stream/quotes?symbols={','.join(symbols)}", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert response.status_code == 200
        async for event in events_of(response):
            if event.kind == "comment" and event.data.startswith("following"):
                ready.set()
            elif event.kind == "end":
                pytest.fail(f"the service ended a stream: {event.data}")
            elif event.kind == "quote":
                now_ns = time.time_ns()
                quote = decode(event.data)
                key = (quote.symbol, quote.seq)
                assert key not in arrived, f"{key} arrived twice"
                written_ns = int(datetime.fromisoformat(quote.updated_at).timestamp() * 1e6) * 1000
                arrived[key] = (now_ns, written_ns)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def test_every_tick_reaches_the_stream_and_the_latency_is_reported(
    isolated: Settings, verifier: SignedTokens, test_id: str, tmp_path: Path
) -> None:
    await ensure_topics(isolated.kafka)
    symbols = [f"L{test_id[:6].upper()}{i:04d}" for i in range(SYMBOLS)]
    source = f"latency-{test_id}"
    app = build_app(isolated, verifier=verifier, limits=LIMITS)
    token = verifier.issue(uuid.uuid4())
    arrived: dict[tuple[str, int], tuple[int, int]] = {}
    consumer = start_consumer(isolated, tmp_path / "consumer.log")
    producer = make_producer(isolated.kafka, client_suffix="latency-test")
    await producer.start()
    try:
        async with served(app) as url:
            readies = [asyncio.Event() for _ in range(STREAMS)]
            share = SYMBOLS // STREAMS
            streams = [
                asyncio.create_task(follow(url, token, symbols[i * share : (i + 1) * share], arrived, readies[i]))
                for i in range(STREAMS)
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
            # Warm-up, not measured: a tick of each stream's first symbol, until all
            # arrive (the consumer has its partitions and every path is open).
            # Seqs increase over the whole feed, as a source's must: the consumer
            # drops a tick at or below its partition's mark as a re-send.
            warm_up = [(symbols[i * share], i) for i in range(STREAMS)]
            await publish(producer, isolated.kafka.ticks_topic, warm_up, source)
            await wait_for_count(arrived, warm_up, consumer, tmp_path, timeout_s=120)
            warm = dict(arrived)
            arrived.clear()
            # Measured: 1,000 ticks a second, each of another symbol.
            ticks = [(symbols[n], STREAMS + n) for n in range(RATE * SECONDS)]
            began, cpu = time.monotonic(), time.process_time()
            stamps = await publish(producer, isolated.kafka.ticks_topic, ticks, source)
            publish_s = time.monotonic() - began
            await wait_for_count(arrived, ticks, consumer, tmp_path, timeout_s=60)
            busy = (time.process_time() - cpu) / (time.monotonic() - began)
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
    finally:
        await producer.stop()
        end(consumer, signal.SIGTERM, 30)
    assert sorted(warm) == sorted(warm_up)
    assert sorted(arrived) == sorted(ticks)  # every tick, once
    latency_ms = [(arrived[t][0] - ts) / 1e6 for t, ts in zip(ticks, stamps, strict=True)]
    to_redis_ms = [(arrived[t][1] - ts) / 1e6 for t, ts in zip(ticks, stamps, strict=True)]
    to_client_ms = [(arrived[t][0] - arrived[t][1]) / 1e6 for t in ticks]
    print(
        f"\ntick published to Kafka -> event on the stream: {len(ticks):,} ticks at {len(ticks) / publish_s:,.0f}/s "
        f"over {SYMBOLS:,} symbols, {STREAMS} streams; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"this process (publisher, service, streams' clients) busy {busy:.0%} of a CPU while measured")
    for name, values in (
        ("end to end", latency_ms),
        ("  Kafka + consumer (to the quote written)", to_redis_ms),
        ("  pub/sub + service + HTTP (written to parsed)", to_client_ms),
    ):
        print(
            f"{name:48s} p50 {percentile(values, 50):7.1f} ms   p90 {percentile(values, 90):7.1f} ms   "
            f"p99 {percentile(values, 99):7.1f} ms   max {max(values):7.1f} ms   "
            f"mean {statistics.fmean(values):7.1f} ms"
        )


async def wait_for_count(
    arrived: dict[tuple[str, int], tuple[int, int]],
    expected: list[tuple[str, int]],
    consumer: subprocess.Popen[bytes],
    tmp_path: Path,
    *,
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    count = len(expected)
    while len(arrived) < count:
        if consumer.poll() is not None:
            pytest.fail(
                f"the consumer exited {consumer.returncode}:\n{(tmp_path / 'consumer.log').read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            why = diagnosis(arrived, expected)
            pytest.fail(f"{len(arrived):,} of {count:,} events arrived within {timeout_s} s; {why}")
        await asyncio.sleep(0.05)


def diagnosis(arrived: dict[tuple[str, int], tuple[int, int]], expected: list[tuple[str, int]]) -> str:
    """Which ticks are missing: superseded by a later tick of their symbol (two in one
    consumer batch: the quote moved once) or lost after it (a stream ended)."""
    latest: dict[str, int] = {}
    for symbol, seq in arrived:
        latest[symbol] = max(latest.get(symbol, -1), seq)
    missing = [(s, q) for s, q in expected if (s, q) not in arrived]
    superseded = sum(1 for s, q in missing if latest.get(s, -1) > q)
    return f"missing {len(missing)}: {superseded} superseded by a later tick of their symbol"
