"""Reading the pipeline's quotes (integration, Redis): many symbols, one round trip."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.schemas.ticks import Tick
from nexanest.services.portfolio.quotes import read_quotes
from nexanest.services.portfolio.valuation import Quote

pytestmark = pytest.mark.integration


def tick(symbol: str, price_e9: int, ts_ns: int) -> Tick:
    return Tick(symbol=symbol, exchange="XNAS", price_e9=price_e9, size_e9=10**9, ts_ns=ts_ns, seq=1, source="test")


async def test_quotes_written_by_the_pipeline_are_read_in_one_round_trip(
    isolated: Settings, quotes_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = isolated.redis.quote_key_prefix
    sink = RedisQuoteSink(quotes_redis, prefix)
    symbols = [f"S{i:03d}" for i in range(50)]
    sink.write([tick(s, 187_250_000_000 + i, 1_800_000_000_000_000_000 + i) for i, s in enumerate(symbols)])
    await sink.flush(observe_latency=False)
    await quotes_redis.hset(prefix + "BROKEN", mapping={"price": "not a price", "ts_ns": "1"})

    sends = 0
    real_send = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        await real_send(self, command, check_health)

    await quotes_redis.ping()  # connected before counting
    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    quotes = await read_quotes(quotes_redis, prefix, [*symbols, "NOQUOTE", "BROKEN"])
    assert sends == 1
    assert quotes["S000"] == Quote(Decimal("187.25"), 1_800_000_000_000_000_000)
    assert quotes["S049"] == Quote(Decimal("187.250000049"), 1_800_000_000_000_000_049)
    assert quotes["NOQUOTE"] is None
    assert quotes["BROKEN"] is None
    assert await read_quotes(quotes_redis, prefix, []) == {}
    assert sends == 1  # nothing asked, nothing sent
