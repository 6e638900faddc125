"""The one-statement rollup upsert (``upsert_bars``) against the four-statement
form it replaced (``upsert_bars_per_resolution``, kept in ``ohlcv_reference.py``
for this comparison only): same stored bars, same returned bars, on random
batches merged into random stored state; and its lock order with ``repair``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexanest.pipeline.edition import detect_edition
from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS, ROLLUP_TABLES, StoredBar, minute_bars, minute_bars_of_ticks
from nexanest.pipeline.sinks.ohlcv_upsert import upsert_bars
from nexanest.pipeline.sinks.timescale import stock_price_row
from nexanest.schemas.ticks import Tick
from tests.pipeline.sinks.ohlcv_reference import upsert_bars_per_resolution

BASE_NS = int(datetime(2025, 1, 6, 23, 57, tzinfo=UTC).timestamp()) * 10**9
US = 1_000

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def apache_edition(timescale_pool: asyncpg.Pool) -> None:
    """``timescale_pool`` reaches the Apache cluster; another edition there is a broken set-up, not a skip."""
    edition = await detect_edition(timescale_pool)
    assert edition == "apache", f"the pipeline's rollups serve the Apache edition; this server's is {edition}"


# (symbol index, time offset from BASE in us, price x 1e9, size x 1e9, seq): across
# minute, 5 minute, hour and day edges, equal times, extreme values.
_OFFSET_US = st.one_of(
    st.integers(0, 6 * 60 * 10**6),
    st.integers(-2 * 86_400 * 10**6, 2 * 86_400 * 10**6),
    st.sampled_from([0, 59_999_999, 60_000_000, 180_000_000, 183_000_000]),
)
_Drawn = tuple[int, int, int, int, int]
_TICKS = st.lists(
    st.tuples(
        st.integers(0, 2),
        _OFFSET_US,
        st.one_of(st.integers(1, 10**12), st.integers(1, 10**20 - 1)),
        st.one_of(st.just(0), st.integers(1, 10**12), st.integers(0, 10**20 - 1)),
        st.integers(-(2**63), 2**63 - 1),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda t: t[4],
)


def _rows(drawn: Sequence[_Drawn], symbols: Sequence[str]) -> list[Any]:
    return [
        stock_price_row(
            Tick(
                symbol=symbols[s],
                exchange="XTST",
                price_e9=price,
                size_e9=size,
                ts_ns=BASE_NS + offset_us * US,
                source="upsert-test",
                seq=seq,
            ),
            0,
            0,
        )
        for s, offset_us, price, size, seq in drawn
    ]


def _exact(bars: list[StoredBar]) -> list[tuple[Any, ...]]:
    """Returned bars with every Decimal as its text: the scale must match too (the
    Redis bar cache writes the digits as they come)."""
    return sorted(
        (
            b.resolution,
            b.symbol,
            b.bucket,
            *map(str, (b.open, b.high, b.low, b.close, b.volume)),
            b.trade_count,
            str(b.vwap),
        )
        for b in bars
    )


async def _stored(conn: asyncpg.Connection, symbols: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        r: [
            tuple(str(v) for v in row)
            for row in await conn.fetch(
                f"SELECT * FROM {ROLLUP_TABLES[r]} WHERE symbol = ANY($1::text[]) ORDER BY symbol, bucket", symbols
            )
        ]
        for r in RESOLUTIONS
    }


@pytest.mark.usefixtures("apache_edition")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored=_TICKS, batch=_TICKS)
async def test_one_statement_stores_and_returns_what_four_statements_did(
    timescale_pool: asyncpg.Pool,
    stored: list[tuple[int, int, int, int, int]],
    batch: list[tuple[int, int, int, int, int]],
) -> None:
    uid = uuid.uuid4().hex[:12].upper()
    symbols = [f"UP{uid}{i}" for i in range(3)]
    before = minute_bars(_rows(stored, symbols))
    incoming = minute_bars(_rows(batch, symbols))
    outcome: dict[str, tuple[list[tuple[Any, ...]], dict[str, list[tuple[Any, ...]]]]] = {}
    async with timescale_pool.acquire() as conn:
        example = conn.transaction()
        await example.start()
        try:
            await upsert_bars_per_resolution(conn, before)
            for name, upsert in (("one", upsert_bars), ("four", upsert_bars_per_resolution)):
                each = conn.transaction()  # a savepoint: both forms start from the same state
                await each.start()
                returned = await upsert(conn, incoming)
                outcome[name] = (_exact(returned), await _stored(conn, symbols))
                await each.rollback()
        finally:
            await example.rollback()  # the example leaves no bars behind
    assert outcome["one"] == outcome["four"]
    assert {b[0] for b in outcome["one"][0]} == set(RESOLUTIONS)


@pytest.mark.usefixtures("apache_edition")
async def test_an_empty_batch_sends_nothing(timescale_pool: asyncpg.Pool) -> None:
    async with timescale_pool.acquire() as conn:
        assert await upsert_bars(conn, {}) == []


@pytest.mark.usefixtures("apache_edition")
async def test_a_batch_waits_for_a_repair_at_the_1m_table_holding_no_other_rollup(
    timescale_pool: asyncpg.Pool, admin_dsn: str, test_id: str
) -> None:
    """Repair locks 1m, 5m, 1h, 1d in that order. While it holds only the 1m
    table, a batch's statement waits there holding no other rollup table, so the
    repair gets the other three (were the order different: a deadlock)."""
    symbol = f"LOCK{test_id.upper()}"
    tick = Tick(symbol=symbol, exchange="XTST", price_e9=10**11, size_e9=10**9, ts_ns=BASE_NS, source="lock", seq=1)
    bars = minute_bars_of_ticks([(tick, 0, 0)])
    repair = await asyncpg.connect(admin_dsn)
    upsert: asyncio.Task[list[StoredBar]] | None = None
    try:
        async with timescale_pool.acquire() as batch:
            repairing = repair.transaction()
            await repairing.start()
            await repair.execute("SET LOCAL lock_timeout = '5s'")
            await repair.execute(f"LOCK TABLE {ROLLUP_TABLES['1m']} IN SHARE ROW EXCLUSIVE MODE")
            async with batch.transaction():
                upsert = asyncio.create_task(upsert_bars(batch, bars))
                held: list[tuple[str, bool]] = []
                for _ in range(500):
                    held = [
                        (r["relation"], r["granted"])
                        for r in await repair.fetch(
                            "SELECT relation::regclass::text AS relation, granted FROM pg_locks"
                            " WHERE pid = $1 AND locktype = 'relation' AND relation::regclass::text LIKE 'ohlcv_%'",
                            batch.get_server_pid(),
                        )
                    ]
                    if (ROLLUP_TABLES["1m"], False) in held:
                        break
                    await asyncio.sleep(0.01)
                assert held == [(ROLLUP_TABLES["1m"], False)]
                rest = ", ".join(ROLLUP_TABLES[r] for r in RESOLUTIONS[1:])
                await repair.execute(f"LOCK TABLE {rest} IN SHARE ROW EXCLUSIVE MODE")  # lock_timeout if not
                assert not upsert.done()
                await repairing.rollback()
                stored = await asyncio.wait_for(upsert, 10)
                assert sorted(b.resolution for b in stored) == sorted(RESOLUTIONS)
    finally:
        if not repair.is_in_transaction() and upsert is not None and not upsert.done():
            upsert.cancel()
        if repair.is_in_transaction():
            await repair.execute("ROLLBACK")
        # The batch committed one bar per resolution; the owner removes them.
        for r in RESOLUTIONS:
            await repair.execute(f"DELETE FROM {ROLLUP_TABLES[r]} WHERE symbol = $1", symbol)
        await repair.close()


@pytest.fixture
def admin_dsn(migrated: Any) -> str:
    return str(migrated.timescale.admin_dsn.get_secret_value())
