"""GET /ticks/{symbol} and GET /indices/{name}/values against the real TimescaleDB
(integration): following the cursor reads every row of the range exactly once,
in order, while rows keep arriving; bad ranges and cursors are refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import asyncpg
import msgspec
import pytest
from fastapi import FastAPI

from nexanest.services.market_data.cursor import encode_cursor
from tests.services.market_data.conftest import TEST_LIMITS, running, symbol_of

pytestmark = pytest.mark.integration

BASE = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def iso(t: datetime) -> str:
    return quote(t.isoformat())


async def insert_ticks(pool: asyncpg.Pool, rows: list[tuple[datetime, str, Decimal, str, int]]) -> None:
    """(time, symbol, price, source, seq) rows, inserted as the ingest role does."""
    await pool.copy_records_to_table(
        "stock_prices",
        records=[(t, s, p, Decimal(10), p - Decimal("0.01"), None, "XTST", src, q, 0, q) for t, s, p, src, q in rows],
        columns=[
            "time",
            "symbol",
            "price",
            "size",
            "bid",
            "ask",
            "exchange",
            "source",
            "source_seq",
            "kafka_partition",
            "kafka_offset",
        ],
    )


async def stored(pool: asyncpg.Pool, symbol: str, start: datetime, end: datetime) -> list[tuple[str, str, int, str]]:
    rows = await pool.fetch(
        "SELECT time, source, source_seq, price FROM stock_prices WHERE symbol = $1 AND time >= $2 AND time < $3"
        " ORDER BY time, source, source_seq",
        symbol,
        start,
        end,
    )
    return [(r["time"].isoformat(), r["source"], r["source_seq"], format(r["price"].normalize(), "f")) for r in rows]


def as_keys(ticks: list[dict[str, Any]]) -> list[tuple[str, str, int, str]]:
    return [(datetime.fromisoformat(t["time"]).isoformat(), t["source"], t["seq"], t["price"]) for t in ticks]


async def test_following_the_cursor_reads_every_tick_once_in_order_while_ticks_arrive(
    app: FastAPI, timescale_pool: asyncpg.Pool, headers: dict[str, str], test_id: str
) -> None:
    symbol = symbol_of(test_id)
    start, end = BASE, BASE + timedelta(minutes=10)
    # 1,237 ticks, three at each millisecond from two sources: pages split ties.
    await insert_ticks(
        timescale_pool,
        [
            (start + (i // 3) * MS, symbol, Decimal(100) + Decimal(i) / 1000, f"md-{test_id}-{'ab'[i % 2]}", i)
            for i in range(1_237)
        ],
    )
    await insert_ticks(timescale_pool, [(start - MS, symbol, Decimal(1), f"md-{test_id}-a", 9_000)])  # before
    async with running(app) as http:
        first = await http.get(f"/ticks/{symbol}?from={iso(start)}&to={iso(end)}&limit=100", headers=headers)
        body = first.json()
        pages = [body["ticks"]]
        # Ticks keep arriving while the client pages: ahead of the cursor inside the
        # range (they belong to the listing), and at and after its end (they do not).
        await insert_ticks(
            timescale_pool,
            [(end - MS, symbol, Decimal(7), f"md-{test_id}-late", n) for n in range(5)]
            + [(end + n * MS, symbol, Decimal(8), f"md-{test_id}-after", n) for n in range(5)],
        )
        cursor = body["next_cursor"]
        while cursor is not None:
            response = await http.get(f"/ticks/{symbol}?limit=100&cursor={cursor}", headers=headers)
            assert response.status_code == 200, response.text
            pages.append(response.json()["ticks"])
            cursor = response.json()["next_cursor"]
    seen = as_keys([t for page in pages for t in page])
    assert len(seen) == 1_237 + 5
    assert seen == await stored(timescale_pool, symbol, start, end)  # all of them, once each, in order
    assert [len(p) for p in pages] == [100] * 12 + [42]
    tick = pages[0][0]
    assert tick == {
        "time": "2026-03-02T14:00:00Z",
        "price": "100",
        "size": "10",
        "bid": "99.99",
        "ask": None,
        "exchange": "XTST",
        "source": f"md-{test_id}-a",
        "seq": 0,
    }


async def test_a_range_of_exactly_one_page_ends_with_no_cursor_and_defaults_reach_an_hour_back(
    app: FastAPI, timescale_pool: asyncpg.Pool, headers: dict[str, str], test_id: str
) -> None:
    symbol = symbol_of(test_id)
    now = datetime.now(UTC)
    await insert_ticks(
        timescale_pool,
        [
            (now - timedelta(minutes=61), symbol, Decimal(1), f"md-{test_id}", 0),  # outside the default hour
            *((now - timedelta(minutes=30) + n * MS, symbol, Decimal(2), f"md-{test_id}", n + 1) for n in range(3)),
        ],
    )
    async with running(app) as http:
        exact = await http.get(f"/ticks/{symbol}?limit=3", headers=headers)
        empty = await http.get(f"/ticks/{symbol}?from={iso(BASE)}&to={iso(BASE + MS)}", headers=headers)
    assert [t["seq"] for t in exact.json()["ticks"]] == [1, 2, 3]
    assert exact.json()["next_cursor"] is None
    assert empty.json() == {"symbol": symbol, "ticks": [], "next_cursor": None}


async def test_index_values_page_the_same_way(
    app: FastAPI, timescale_pool: asyncpg.Pool, headers: dict[str, str], test_id: str
) -> None:
    name = symbol_of(test_id, "IX")
    await timescale_pool.executemany(
        "INSERT INTO market_indices (time, index_name, value, constituents, method)"
        " VALUES ($1, $2, $3, 3, 'equal_weight')",
        [(BASE + n * timedelta(seconds=1), name, Decimal(100) + n) for n in range(50)],
    )
    async with running(app) as http:
        url = f"/indices/{name}/values?from={iso(BASE)}&to={iso(BASE + timedelta(minutes=1))}&limit=7"
        pages = []
        response = await http.get(url, headers=headers)
        while True:
            assert response.status_code == 200, response.text
            pages.append(response.json()["values"])
            if (cursor := response.json()["next_cursor"]) is None:
                break
            response = await http.get(f"/indices/{name}/values?limit=7&cursor={cursor}", headers=headers)
    values = [v["value"] for page in pages for v in page]
    assert values == [str(100 + n) for n in range(50)]
    assert [len(p) for p in pages] == [7] * 7 + [1]
    assert pages[0][0] == {"time": "2026-03-02T14:00:00Z", "value": "100", "constituents": 3, "method": "equal_weight"}


def forged(payload: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(payload)).rstrip(b"=").decode()


async def test_bad_ranges_limits_and_cursors_are_refused_with_a_problem(
    app: FastAPI, headers: dict[str, str], test_id: str
) -> None:
    symbol = symbol_of(test_id)
    end_us = int((BASE - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    good = encode_cursor("ticks", symbol, end_us, end_us - 1_000, "src", 1)
    too_long = TEST_LIMITS.max_tick_range + timedelta(seconds=1)
    cases = {
        "reversed": f"from={iso(BASE)}&to={iso(BASE - MS)}",
        "empty": f"from={iso(BASE)}&to={iso(BASE)}",
        "too long": f"from={iso(BASE - too_long)}&to={iso(BASE)}",
        "no zone": "from=2026-03-02T14:00:00&to=2026-03-02T15:00:00",
        "not a time": "from=yesterday",
        "limit 0": "limit=0",
        "limit too big": f"limit={TEST_LIMITS.max_tick_page + 1}",
        "cursor and range": f"cursor={good}&from={iso(BASE - MS)}",
        "garbage cursor": "cursor=not-a-cursor!",
        "foreign cursor": f"cursor={encode_cursor('ticks', symbol + 'X', end_us, end_us - 1)}",
        "index cursor": f"cursor={encode_cursor('index', symbol, end_us, end_us - 1)}",
        "forged wide cursor": f"cursor={encode_cursor('ticks', symbol, end_us, 0)}",
        "forged shape": f"cursor={forged([1, 'ticks', symbol, 'x', 0, '', 0])}",
        "forged far time": f"cursor={forged([1, 'ticks', symbol, 2**62, 2**62 - 5, '', 0])}",
    }
    async with running(app) as http:
        answers = {name: await http.get(f"/ticks/{symbol}?{query}", headers=headers) for name, query in cases.items()}
        bad_symbol = await http.get(f"/ticks/{symbol.lower()}", headers=headers)
        fine = await http.get(f"/ticks/{symbol}?cursor={good}", headers=headers)
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(cases, 422)
    assert all(r.headers["content-type"] == "application/problem+json" for r in answers.values())
    assert answers["too long"].json()["detail"] == "the range is longer than the 1 day one request may cover"
    assert answers["foreign cursor"].json()["detail"] == "the cursor continues another listing, not this symbol"
    assert bad_symbol.status_code == 422
    assert fine.status_code == 200
