"""TimescaleSink against the real TimescaleDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import asyncpg
import msgspec
import pytest

from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.errors import FencedError, RejectedByDatabase, RetryableError
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.schemas.ticks import Tick

pytestmark = pytest.mark.integration

T0 = 1_764_000_000_123_456_789


def make_tick(source: str, seq: int, price_e9: int = 187_250_000_001) -> Tick:
    return Tick(
        symbol="COPY",
        exchange="XNAS",
        price_e9=price_e9,
        size_e9=1,
        ts_ns=T0 + seq,
        source=source,
        seq=seq,
        bid_e9=None,
        ask_e9=price_e9 + 1,
    )


async def test_rows_and_offsets_commit_together(timescale_pool: asyncpg.Pool, test_id: str) -> None:
    source = f"sink-{test_id}"
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets)
    assert await offsets.claim("ticks", [3]) == {3: None}
    sink.write([(make_tick(source, i), 3, 100 + i) for i in range(10)])
    offsets.advance({("ticks", 3): 110})
    assert await sink.flush() == 10
    assert await offsets.stored_offsets("ticks") == {3: 110}
    rows = await timescale_pool.fetch(
        "SELECT time, price, size, bid, ask, kafka_offset FROM stock_prices WHERE source = $1 ORDER BY source_seq",
        source,
    )
    assert len(rows) == 10
    assert rows[0]["price"] == Decimal("187.250000001")  # exact, no float rounding
    assert rows[0]["size"] == Decimal("0.000000001")
    assert rows[0]["bid"] is None
    assert rows[0]["time"] == ns_to_datetime(T0)
    assert [r["kafka_offset"] for r in rows] == list(range(100, 110))


async def test_rows_the_database_refuses_are_isolated_and_the_rest_written(
    timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """Values validation would have caught, written straight to the sink: the
    batch fails as a whole, commits nothing, and the sink finds the rows at fault
    (a CHECK violation, a NUL the server's text refuses, a seq beyond BIGINT);
    after they are raised, the next flush writes the rest and the offsets."""
    source = f"sink-{test_id}"
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets)
    await offsets.claim("ticks", [0])
    good = [(make_tick(source, i), 0, i) for i in range(40)]
    bad = {
        7: make_tick(source, 7, price_e9=-1),
        19: msgspec.structs.replace(make_tick(source, 19), exchange="X\x00"),
        33: msgspec.structs.replace(make_tick(source, 33), seq=2**63),
    }
    sink.write([(bad.get(offset, tick), p, offset) for tick, p, offset in good])
    offsets.advance({("ticks", 0): 40})
    with pytest.raises(RejectedByDatabase) as refused:
        await sink.flush()
    assert await timescale_pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source) == 0
    assert await offsets.stored_offsets("ticks") == {}
    assert [(p, o) for p, o, _ in refused.value.refused] == [(0, 7), (0, 19), (0, 33)]
    messages = [m for _, _, m in refused.value.refused]
    assert "CheckViolationError" in messages[0]
    assert "0x00" in messages[1]
    assert "int64" in messages[2]

    assert await sink.flush() == 37
    rows = await timescale_pool.fetch("SELECT source_seq FROM stock_prices WHERE source = $1 ORDER BY 1", source)
    assert [r["source_seq"] for r in rows] == sorted(set(range(40)) - set(bad))
    assert await offsets.stored_offsets("ticks") == {0: 40}


async def test_a_row_that_fails_only_the_copy_encoding_is_isolated(timescale_pool: asyncpg.Pool, test_id: str) -> None:
    """A lone surrogate fails the client-side COPY encoder before the server sees
    anything: the same isolation finds it."""
    source = f"enc-{test_id}"
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets)
    await offsets.claim("ticks", [0])
    sink.write([(make_tick(source, 0), 0, 0), (msgspec.structs.replace(make_tick(source, 1), exchange="\udc80"), 0, 1)])
    offsets.advance({("ticks", 0): 2})
    with pytest.raises(RejectedByDatabase) as refused:
        await sink.flush()
    assert [(p, o) for p, o, _ in refused.value.refused] == [(0, 1)]
    assert await sink.flush() == 1
    assert await offsets.stored_offsets("ticks") == {0: 2}


async def test_a_re_sent_tick_written_as_checked_is_skipped_not_doubled(
    timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    source = f"dup-{test_id}"
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets)
    await offsets.claim("ticks", [0])
    sink.write([(make_tick(source, i), 0, i) for i in range(3)])
    offsets.advance({("ticks", 0): 3}, {("ticks", 0): {source: 2}})
    assert await sink.flush() == 3
    # A publisher re-sent ticks 1 to 4 after a failed delivery (header: looked up, not
    # judged by the mark): 1 and 2 had landed, 3 and 4 not; 4 came twice.
    sink.write_checked([(make_tick(source, i), 0, 2 + i) for i in (1, 2, 3, 4, 4)])
    offsets.advance({("ticks", 0): 8})
    assert await sink.flush() == 2
    rows = await timescale_pool.fetch("SELECT source_seq FROM stock_prices WHERE source = $1 ORDER BY 1", source)
    assert [r["source_seq"] for r in rows] == [0, 1, 2, 3, 4]
    assert await offsets.stored_offsets("ticks") == {0: 8}


async def test_the_marks_commit_with_the_offsets_and_come_back_with_a_claim(
    timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    group, source = f"g-{test_id}", f"mark-{test_id}"
    offsets = OffsetStore(timescale_pool, group)
    sink = TimescaleSink(timescale_pool, offsets)
    await offsets.claim("ticks", [0, 1])
    sink.write([(make_tick(source, 7), 0, 0), (make_tick(source, 5), 1, 0)])
    offsets.advance({("ticks", 0): 1, ("ticks", 1): 1}, {("ticks", 0): {source: 7}, ("ticks", 1): {source: 5}})
    assert await sink.flush() == 2
    assert offsets.marks(("ticks", 0)) == {source: 7}
    # A lower mark never moves it back (greatest); a fenced batch moves nothing.
    offsets.advance({("ticks", 0): 2}, {("ticks", 0): {source: 3}})
    assert await sink.flush() == 0
    rival = OffsetStore(timescale_pool, group)
    assert await rival.claim("ticks", [1]) == {1: 1}
    assert rival.marks(("ticks", 1)) == {source: 5}
    sink.write([(make_tick(source, 9), 1, 1)])
    offsets.advance({("ticks", 1): 2}, {("ticks", 1): {source: 9}})
    with pytest.raises(FencedError):
        await sink.flush()
    sink.discard()
    again = OffsetStore(timescale_pool, group)
    await again.claim("ticks", [0, 1])
    assert again.marks(("ticks", 0)) == {source: 7}
    assert again.marks(("ticks", 1)) == {source: 5}


@asynccontextmanager
async def offsets_row_locked(pool: asyncpg.Pool, group: str) -> AsyncIterator[None]:
    """Another session holds the group's ``ingest_offsets`` rows: a flush then
    COPYs (and merges bars) but waits at its last step, moving the offsets."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM ingest_offsets WHERE consumer_group = $1 FOR UPDATE", group)
        yield


async def test_a_failure_at_the_last_step_commits_nothing(
    migrated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """The offsets move last in the transaction: when that step fails (here it
    times out behind a lock), the rows roll back with it and the buffer is kept."""
    source, group = f"late-{test_id}", f"g-{test_id}"
    impatient = await asyncpg.create_pool(migrated.timescale.dsn.get_secret_value(), min_size=1, command_timeout=0.5)
    try:
        offsets = OffsetStore(impatient, group)
        sink = TimescaleSink(impatient, offsets)
        await offsets.claim("ticks", [0])
        sink.write([(make_tick(source, 0), 0, 0)])
        offsets.advance({("ticks", 0): 1})
        async with offsets_row_locked(timescale_pool, group):
            with pytest.raises(RetryableError):
                await sink.flush()
        assert await timescale_pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source) == 0
        assert await offsets.stored_offsets("ticks") == {}
        assert await sink.flush() == 1  # the buffer was kept for the retry
        assert await offsets.stored_offsets("ticks") == {0: 1}
    finally:
        await impatient.close()


async def test_a_large_batch_streams_in_parts_with_exact_rows_and_bars(
    timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """6,500 rows: the COPY goes in four parts and the bars are aggregated in four
    symbol groups (``_ROWS_PER_STEP`` is 2,000); rows and bars must be exact."""
    from nexanest.pipeline.edition import detect_edition
    from tests.pipeline.sinks.test_ohlcv import BASE_NS, assert_bars_match_ticks, entry, tick

    # The pipeline keeps the bars itself only under timescaledb.license = apache: the cluster of timescale_pool.
    assert await detect_edition(timescale_pool) == "apache"
    source = f"big-{test_id}"
    symbols = [f"BIG{test_id.upper()}{i}" for i in range(7)]
    batch = [
        entry(tick(symbols[i % 7], source, i, BASE_NS + i * 10**8, (100 + i % 13) * 10**9 + i), offset=i)
        for i in range(6_500)
    ]
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets, rollups=True)
    sink.write(batch)
    assert await sink.flush() == 6_500
    stored = await timescale_pool.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT source_seq) AS seqs, sum(price) AS prices FROM stock_prices"
        " WHERE source = $1",
        source,
    )
    assert (stored["n"], stored["seqs"]) == (6_500, 6_500)
    assert stored["prices"] == sum(Decimal(t.price_e9).scaleb(-9) for t, _, _ in batch)
    await assert_bars_match_ticks(timescale_pool, source, symbols)
