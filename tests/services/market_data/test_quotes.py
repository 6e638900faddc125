"""GET /quotes/{symbol} and GET /quotes?symbols=: the quotes the consumer's sink
wrote to the real Redis, read back through the service (integration)."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from fastapi import FastAPI
from redis.asyncio.connection import Connection

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.schemas.ticks import Tick
from tests.services.market_data.conftest import TEST_LIMITS, running, symbol_of

pytestmark = pytest.mark.integration

T0 = 1_764_000_000_123_456_789


def tick(symbol: str, price_e9: int, ts_ns: int = T0, seq: int = 1, *, book: bool = True) -> Tick:
    return Tick(
        symbol=symbol,
        exchange="XNAS",
        price_e9=price_e9,
        size_e9=250 * 10**9,
        ts_ns=ts_ns,
        source="md-test",
        seq=seq,
        bid_e9=price_e9 - 10**7 if book else None,
        ask_e9=price_e9 + 10**7 if book else None,
    )


async def write_quotes(settings: Settings, ticks: list[Tick]) -> None:
    client = redis.Redis.from_url(settings.redis.url.get_secret_value(), db=settings.redis.db_quotes)
    try:
        sink = RedisQuoteSink(client, settings.redis.quote_key_prefix)
        sink.write(ticks)
        await sink.flush()
    finally:
        await client.aclose()


async def test_a_quote_reads_back_exactly_as_the_sink_wrote_it(
    app: FastAPI, service_settings: Settings, headers: dict[str, str], test_id: str
) -> None:
    symbol = symbol_of(test_id)
    later = tick(symbol, 1, ts_ns=T0 + 1, seq=2, book=False)
    await write_quotes(service_settings, [tick(symbol, 187_250_000_000), later])
    async with running(app) as http:
        response = await http.get(f"/quotes/{symbol}", headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "symbol": symbol,
        "price": "0.000000001",  # the later tick's: exact, no exponent, no float
        "bid": None,
        "ask": None,
        "size": "250",
        "exchange": "XNAS",
        "time": "2025-11-24T16:00:00.123456Z",
        "ts_ns": T0 + 1,
        "seq": 2,
        "updated_at": response.json()["updated_at"],
    }


async def test_a_symbol_without_a_quote_is_404_and_a_bad_one_422(
    app: FastAPI, headers: dict[str, str], test_id: str
) -> None:
    async with running(app) as http:
        missing = await http.get(f"/quotes/{symbol_of(test_id)}", headers=headers)
        lower = await http.get("/quotes/aapl", headers=headers)
        long = await http.get("/quotes/" + "A" * 33, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "there is no quote for this symbol"
    assert (lower.status_code, long.status_code) == (422, 422)


async def test_many_quotes_in_one_round_trip_in_the_order_asked(
    app: FastAPI, service_settings: Settings, headers: dict[str, str], test_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c, none = (symbol_of(test_id, s) for s in ("A", "B", "C", "N"))
    await write_quotes(service_settings, [tick(a, 10**9), tick(b, 2 * 10**9), tick(c, 3 * 10**9, book=False)])
    sent: list[int | str] = []
    original = Connection.send_packed_command

    async def counting(self: Connection, command: object, check_health: bool = True) -> None:
        sent.append(self.db)
        await original(self, command, check_health)  # type: ignore[arg-type]

    async with running(app) as http:
        await http.get(f"/quotes/{a}", headers=headers)  # connects: AUTH, SELECT, ... go before counting
        with monkeypatch.context() as patch:
            patch.setattr(Connection, "send_packed_command", counting)
            response = await http.get(f"/quotes?symbols={c},{none},{a},{b},{a}", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert [q["symbol"] for q in body["quotes"]] == [c, a, b]
    assert [q["price"] for q in body["quotes"]] == ["3", "1", "2"]
    assert body["quotes"][0]["bid"] is None
    assert body["missing"] == [none]
    # Four symbols (the repeat counts once), one write to Redis: one round trip.
    assert sent == [service_settings.redis.db_quotes]


async def test_symbol_lists_are_bounded_and_checked(app: FastAPI, headers: dict[str, str], test_id: str) -> None:
    too_many = ",".join(f"S{i}" for i in range(TEST_LIMITS.max_quote_symbols + 1))
    async with running(app) as http:
        responses = {
            "too many": await http.get(f"/quotes?symbols={too_many}", headers=headers),
            "empty": await http.get("/quotes?symbols=", headers=headers),
            "empty item": await http.get("/quotes?symbols=A,,B", headers=headers),
            "bad item": await http.get("/quotes?symbols=A,b%20c", headers=headers),
            "none": await http.get("/quotes", headers=headers),
        }
    assert {name: r.status_code for name, r in responses.items()} == dict.fromkeys(responses, 422)
    assert responses["bad item"].json()["detail"] == "symbol 2 of the list is not a valid symbol"
    assert "b c" not in responses["bad item"].text


async def test_every_quote_route_needs_a_valid_token(app: FastAPI, test_id: str) -> None:
    async with running(app) as http:
        nothing = await http.get(f"/quotes/{symbol_of(test_id)}")
        forged = await http.get("/quotes?symbols=A", headers={"Authorization": "Bearer nn1.forged"})
    assert (nothing.status_code, forged.status_code) == (401, 401)
    assert nothing.headers["www-authenticate"].startswith("Bearer")
