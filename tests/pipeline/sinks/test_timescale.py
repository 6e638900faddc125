"""TimescaleSink against the real TimescaleDB."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from nexanest.pipeline.sinks.timescale import TimescaleSink, ns_to_datetime, stock_price_row
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
    sink = TimescaleSink(timescale_pool, consumer_group=f"g-{test_id}")
    sink.write([stock_price_row(make_tick(source, i), partition=3, offset=100 + i) for i in range(10)])
    sink.advance({("ticks", 3): 110})
    assert await sink.flush() == 10
    assert await sink.stored_offsets("ticks") == {3: 110}
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


async def test_failed_copy_stores_no_offsets(timescale_pool: asyncpg.Pool, test_id: str) -> None:
    """A batch the database rejects must not move the stored offsets: same transaction."""
    source = f"sink-{test_id}"
    sink = TimescaleSink(timescale_pool, consumer_group=f"g-{test_id}")
    bad = stock_price_row(make_tick(source, 1, price_e9=-1), partition=0, offset=5)  # violates CHECK (price > 0)
    sink.write([stock_price_row(make_tick(source, 0), partition=0, offset=4), bad])
    sink.advance({("ticks", 0): 6})
    with pytest.raises(asyncpg.CheckViolationError):
        await sink.flush()
    assert await sink.stored_offsets("ticks") == {}
    assert await timescale_pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source) == 0
