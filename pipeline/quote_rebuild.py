"""Rebuild Redis quotes from TimescaleDB.

Quotes are derived state. The consumer writes them inside the database
transaction, so they never fall behind committed rows while Redis keeps its
data; but a Redis that restarts loses up to a second of writes (AOF
``everysec``), and a flushed or replaced Redis loses all. On start the consumer
re-applies the latest stored tick of every symbol seen recently; the quote
script only moves a quote forward, so re-applying is always safe.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

import asyncpg

from nexanest.pipeline.db import RETRYABLE_DB_ERRORS
from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.schemas.ticks import Tick

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

# DISTINCT ON walks the (symbol, time DESC) index inside the window.
_LATEST_PER_SYMBOL: Final = """
SELECT DISTINCT ON (symbol) symbol, time, price, size, bid, ask, exchange, source, source_seq
  FROM stock_prices
 WHERE time > now() - make_interval(secs => $1)
 ORDER BY symbol, time DESC, source_seq DESC
"""


def _e9(value: Decimal | None) -> int | None:
    return None if value is None else int(value.scaleb(9))


async def rebuild_quotes(pool: asyncpg.Pool, quotes: RedisQuoteSink, window_s: float) -> int:
    """Re-apply the latest stored tick per symbol of the last ``window_s`` seconds.

    Returns the number of symbols considered. Stored times have microsecond
    resolution, so a quote already holding the same tick at nanosecond
    resolution counts as newer and is left alone.
    """
    if window_s <= 0:
        return 0
    try:
        rows = await pool.fetch(_LATEST_PER_SYMBOL, window_s)
    except RETRYABLE_DB_ERRORS as exc:
        raise RetryableError("timescaledb", exc) from exc
    quotes.write(
        [
            Tick(
                symbol=r["symbol"],
                exchange=r["exchange"],
                price_e9=int(r["price"].scaleb(9)),
                size_e9=int(r["size"].scaleb(9)),
                ts_ns=(r["time"] - _EPOCH) // _MICROSECOND * 1000,
                source=r["source"],
                seq=r["source_seq"],
                bid_e9=_e9(r["bid"]),
                ask_e9=_e9(r["ask"]),
            )
            for r in rows
        ]
    )
    await quotes.flush(observe_latency=False)
    return len(rows)
