"""Re-sent ticks are stored once without a unique index (issue 15).

The consumer drops a tick whose ``seq`` is at or below its partition's
high-water mark; records that re-send old seqs on purpose (a publisher's
re-send, ``nexanest dlq replay``) carry a header and are looked up instead.
Each test sends everything to one partition (one key) so the mark is in play,
and checks the table tick by tick.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.dlq_replay import replay
from nexanest.ops.verify import verify
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.schemas.ticks import HEADER_RESENT, Tick, encode_tick

pytestmark = pytest.mark.integration

KEY = b"DEDUP"
WIDE_SYMBOLS = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,31}$"


def tick(source: str, seq: int, base_ns: int, symbol: str = "DEDUP") -> Tick:
    return Tick(
        symbol=symbol,
        exchange="XNAS",
        price_e9=10 * 10**9 + seq,
        size_e9=10**9,
        ts_ns=base_ns + seq * 1_000,
        source=source,
        seq=seq,
        bid_e9=9 * 10**9,
        ask_e9=11 * 10**9,
    )


async def send(
    settings: Settings, topic: str, ticks: list[Tick], headers: list[tuple[str, bytes]] | None = None
) -> None:
    """Publish in order, all with one key (one partition)."""
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        for t in ticks:
            await producer.send_and_wait(topic, encode_tick(t), key=KEY, headers=headers)
    finally:
        await producer.stop()


async def stored_seqs(pool: asyncpg.Pool, source: str) -> list[int]:
    rows = await pool.fetch("SELECT source_seq FROM stock_prices WHERE source = $1 ORDER BY 1", source)
    return [r["source_seq"] for r in rows]


async def test_a_feed_re_sending_an_overlapping_range_is_stored_once(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    source, base = f"resend-{test_id}", time.time_ns() - 30 * 10**9
    topic = isolated.kafka.ticks_topic
    await send(isolated, topic, [tick(source, s, base) for s in range(300)])
    first = await run_consumer(isolated, asyncio.Event(), until_idle_s=1.5, backfill=False)
    assert (first.written, first.duplicates) == (300, 0)

    # The adapter reconnects and sends 200..399 again (no header: the mark judges
    # them), then a publisher re-sends 350..449 after a failed delivery (header:
    # looked up), within one batch of the consumer's next run.
    await send(isolated, topic, [tick(source, s, base) for s in range(200, 400)])
    await send(isolated, topic, [tick(source, s, base) for s in range(350, 450)], [(HEADER_RESENT, b"1")])
    second = await run_consumer(isolated, asyncio.Event(), until_idle_s=1.5, backfill=False)
    assert second.consumed == 300
    assert second.duplicates == 100  # 200..299, dropped by the mark before COPY
    assert await stored_seqs(timescale_pool, source) == list(range(450))
    marks = await timescale_pool.fetch(
        "SELECT max_seq FROM ingest_seq_marks WHERE consumer_group = $1 AND topic = $2 AND source = $3",
        isolated.kafka.consumer_group,
        topic,
        source,
    )
    assert [m["max_seq"] for m in marks] == [399]  # looked-up ticks neither meet nor move it

    report = await verify(isolated, topic, base, base + 10**9, source)
    assert (report.ok, report.missing, report.duplicates, report.kafka_repeats) == (True, 0, 0, 150)


async def test_a_dead_letter_replayed_below_the_mark_is_stored_once(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    settings = isolated.model_copy(
        update={"kafka": isolated.kafka.model_copy(update={"dlq_replay_group": f"test-{test_id}-replay"})}
    )
    source, base = f"replay-{test_id}", time.time_ns() - 30 * 10**9
    topic = settings.kafka.ticks_topic
    # seq 2 has a symbol today's rules refuse: dead-lettered, while 3..5 move the mark past it.
    ticks = [tick(source, s, base, symbol="brk.b" if s == 2 else "DEDUP") for s in range(1, 6)]
    await send(settings, topic, ticks)
    await run_consumer(settings, asyncio.Event(), until_idle_s=1.5, backfill=False)
    assert await stored_seqs(timescale_pool, source) == [1, 3, 4, 5]

    wide = settings.model_copy(
        update={"validation": settings.validation.model_copy(update={"symbol_pattern": WIDE_SYMBOLS})}
    )
    report = await replay(wide, reasons=["bad_symbol"])
    assert report.republished_total >= 1
    # The same tick comes back twice more: once without a header (a plain re-send,
    # dropped by the mark), once as if the replay had run again (looked up, found).
    await send(settings, topic, [ticks[1]])
    await send(settings, topic, [ticks[1]], [("nexanest.replayed_from", b"again/0/0")])
    stats = await run_consumer(wide, asyncio.Event(), until_idle_s=1.5, backfill=False)
    assert stats.duplicates == 1
    assert await stored_seqs(timescale_pool, source) == [1, 2, 3, 4, 5]


async def test_a_backfill_resumed_from_an_earlier_checkpoint_is_stored_once(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """The replay feed's source is ``replay:<file identity>`` and ``seq`` its row
    number: resuming from a checkpoint re-sends rows the backfill topic may hold
    already, in row order, so the backfill group's own marks drop them."""
    source, base = f"replay:{test_id}", time.time_ns() - 400 * 86_400 * 10**9  # a year-old file
    topic = isolated.kafka.backfill_topic
    await send(isolated, topic, [tick(source, s, base) for s in range(500)])
    await send(isolated, topic, [tick(source, s, base) for s in range(320, 700)])  # resumed at row 320
    stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=2.0)
    assert (stats.written, stats.duplicates) == (700, 180)
    assert await stored_seqs(timescale_pool, source) == list(range(700))
    report = await verify(isolated, topic, base, base + 10**9, source)
    assert (report.ok, report.missing, report.duplicates) == (True, 0, 0)
