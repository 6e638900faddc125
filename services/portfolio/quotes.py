"""The latest quotes of many symbols from the pipeline's Redis, in one round trip.

The pipeline keeps a hash per symbol (``pipeline/sinks/redis_quotes.py``) under
``settings.redis.quote_key_prefix + symbol`` in ``settings.redis.db_quotes``:
``price`` a plain decimal string, ``ts_ns`` the tick's exchange time in Unix
nanoseconds. Only those two fields are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

import redis.asyncio as redis

from nexanest.pipeline.log import get_logger
from nexanest.services.portfolio.valuation import Quote

_log = get_logger("nexanest.services.portfolio.quotes")


async def read_quotes(client: redis.Redis, key_prefix: str, symbols: Sequence[str]) -> dict[str, Quote | None]:
    """The quote of each of ``symbols`` (None: it has none, or one that cannot be
    read, which is logged), with one pipelined round trip whatever their number.
    Redis errors propagate."""
    if not symbols:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.hmget(key_prefix + symbol, "price", "ts_ns")
        replies = await pipe.execute()
    return {symbol: _quote(symbol, price, ts_ns) for symbol, (price, ts_ns) in zip(symbols, replies, strict=True)}


def _quote(symbol: str, price: bytes | None, ts_ns: bytes | None) -> Quote | None:
    if price is None or ts_ns is None:
        return None
    try:
        value = Decimal(price.decode())
        stamp = int(ts_ns)
    except (InvalidOperation, ValueError, UnicodeDecodeError):
        value, stamp = Decimal("NaN"), 0
    if not value.is_finite() or value <= 0 or stamp <= 0:
        _log.warning("quote_unreadable", symbol=symbol)
        return None
    return Quote(price=value, ts_ns=stamp)
