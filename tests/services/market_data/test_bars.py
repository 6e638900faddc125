"""GET /bars/{symbol} against the real TimescaleDB (integration): the bars equal the
rows of the bar views, and the same ticks give the same answer on the Apache
edition (rollups kept by the consumer's sink) and on the community edition
(continuous aggregates), byte for byte."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv import CAGGS, RESOLUTIONS, VIEWS, WIDTHS, Resolution
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.schemas.ticks import Tick
from nexanest.services.market_data.app import build_app
from nexanest.services.tokens import SignedTokens
from tests.conftest import COMMUNITY_TEST_DATABASE, community_dsn
from tests.services.market_data.conftest import TEST_LIMITS, running, symbol_of

pytestmark = pytest.mark.integration

# Ticks over two days around midnight UTC: buckets of every width, partial ones at both ends.
START = datetime(2026, 2, 10, 22, 17, 31, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ticks_of(symbol: str, source: str) -> list[Tick]:
    ticks = []
    for n in range(400):
        at = START + timedelta(seconds=n * 397 + (n % 7) * 0.000_013)  # ~44 h, some microseconds
        price_e9 = 50 * 10**9 + ((n * 7_919) % 1_000) * 10**7 + n  # wanders, exact to 1e-9
        ticks.append(
            Tick(
                symbol=symbol,
                exchange="XTST",
                price_e9=price_e9,
                size_e9=(n % 5) * 10**9 + 10**6,  # a size 0.001 now and then
                ts_ns=(at - EPOCH) // timedelta(microseconds=1) * 1_000,
                source=source,
                seq=n,
            )
        )
    # Two ticks at one time: open and close are decided by seq, on both editions.
    ticks.append(Tick(symbol, "XTST", 77 * 10**9, 10**9, ticks[10].ts_ns, source, 1_000))
    return ticks


async def write(pool: asyncpg.Pool, ticks: list[Tick], *, rollups: bool) -> None:
    sink = TimescaleSink(pool, None, rollups=rollups)
    sink.write([(t, 0, n) for n, t in enumerate(ticks)])
    assert await sink.flush() == len(ticks)


def community_settings(community: Settings) -> Settings:
    reader = community_dsn(community.services.market_data_dsn, COMMUNITY_TEST_DATABASE)
    assert urlsplit(reader.get_secret_value()).port == urlsplit(community.timescale.dsn.get_secret_value()).port
    return community.model_copy(update={"services": community.services.model_copy(update={"market_data_dsn": reader})})


async def bars_by_interval(settings: Settings, verifier: SignedTokens, symbol: str) -> dict[Resolution, Any]:
    headers = {"Authorization": f"Bearer {verifier.issue(uuid.uuid4())}"}
    app = build_app(settings, verifier=verifier, limits=TEST_LIMITS)
    frm, to = quote((START - timedelta(hours=1)).isoformat()), quote((START + timedelta(days=2)).isoformat())
    answers = {}
    async with running(app) as http:
        for interval in RESOLUTIONS:
            response = await http.get(f"/bars/{symbol}?interval={interval}&from={frm}&to={to}", headers=headers)
            assert response.status_code == 200, response.text
            answers[interval] = response.json()
    return answers


async def view_rows(pool: asyncpg.Pool, symbol: str, interval: Resolution) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        f"SELECT * FROM {VIEWS[interval]} WHERE symbol = $1 AND bucket > $2::timestamptz - $3::interval"
        " AND bucket < $4 ORDER BY bucket",
        symbol,
        START - timedelta(hours=1),
        WIDTHS[interval],
        START + timedelta(days=2),
    )
    return rows


def numbers(bar: dict[str, Any]) -> tuple[Any, ...]:
    return (
        datetime.fromisoformat(bar["bucket"]),
        *(Decimal(bar[k]) for k in ("open", "high", "low", "close", "volume")),
        bar["trade_count"],
        None if bar["vwap"] is None else Decimal(bar["vwap"]),
    )


@pytest.mark.timescale_license
async def test_bars_equal_the_views_and_are_the_same_on_both_editions(
    migrated: Settings,
    community: Settings,
    timescale_pool: asyncpg.Pool,
    community_pool: asyncpg.Pool,
    community_admin_pool: asyncpg.Pool,
    verifier: SignedTokens,
    test_id: str,
) -> None:
    symbol = symbol_of(test_id)
    ticks = ticks_of(symbol, f"md-bars-{test_id}")
    await write(timescale_pool, ticks, rollups=True)  # Apache: the consumer's rollups
    await write(community_pool, ticks, rollups=False)  # community: continuous aggregates
    # Other tests' refreshes may have materialized past these (old) buckets already, and
    # real-time aggregation covers only what lies after the watermark: refresh
    # bottom-up over the ticks' range, as the policies would.
    for resolution in RESOLUTIONS:
        await community_admin_pool.execute(
            f"CALL refresh_continuous_aggregate('{CAGGS[resolution]}',"
            f" TIMESTAMPTZ '{(START - timedelta(days=2)).isoformat()}',"
            f" TIMESTAMPTZ '{(START + timedelta(days=4)).isoformat()}')"
        )
    apache = await bars_by_interval(migrated, verifier, symbol)
    native = await bars_by_interval(community_settings(community), verifier, symbol)
    for interval in RESOLUTIONS:
        rows = await view_rows(timescale_pool, symbol, interval)
        expected = [
            (r["bucket"], r["open"], r["high"], r["low"], r["close"], r["volume"], r["trade_count"], r["vwap"])
            for r in rows
        ]
        assert [numbers(b) for b in apache[interval]["bars"]] == expected, interval
        assert native[interval] == apache[interval], interval
        assert [numbers(b) for b in native[interval]["bars"]] == [
            (r["bucket"], r["open"], r["high"], r["low"], r["close"], r["volume"], r["trade_count"], r["vwap"])
            for r in await view_rows(community_pool, symbol, interval)
        ]
    assert [len(apache[i]["bars"]) for i in RESOLUTIONS] == [
        len({(t.ts_ns // 10**9 // int(WIDTHS[i].total_seconds())) for t in ticks}) for i in RESOLUTIONS
    ]
    assert apache["1d"]["bars"][0]["bucket"] == "2026-02-10T00:00:00Z"


async def test_bad_intervals_and_ranges_are_refused(migrated: Settings, verifier: SignedTokens, test_id: str) -> None:
    headers = {"Authorization": f"Bearer {verifier.issue(uuid.uuid4())}"}
    symbol = symbol_of(test_id)
    longest_1m = TEST_LIMITS.max_bars * WIDTHS["1m"]
    t = START
    cases = {
        "interval": "interval=2m",
        "interval case": "interval=1M",
        "too many 1m bars": f"interval=1m&from={quote((t - longest_1m - timedelta(minutes=1)).isoformat())}"
        f"&to={quote(t.isoformat())}",
        "reversed": f"interval=1h&from={quote(t.isoformat())}&to={quote((t - timedelta(hours=1)).isoformat())}",
        "before time": "interval=1d&to=0001-01-02T00:00:00Z",
    }
    async with running(build_app(migrated, verifier=verifier, limits=TEST_LIMITS)) as http:
        answers = {name: await http.get(f"/bars/{symbol}?{q}", headers=headers) for name, q in cases.items()}
        days = await http.get(
            f"/bars/{symbol}?interval=1d&from={quote((t - longest_1m).isoformat())}&to={quote(t.isoformat())}",
            headers=headers,
        )
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(cases, 422)
    assert days.status_code == 200  # the same span is few bars at a wider interval
