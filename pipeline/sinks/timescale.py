"""``TimescaleSink``: one binary COPY per batch, offsets in the same transaction.

Writing the consumed offsets next to the rows means the database itself knows
how far it has ingested: after a crash the consumer resumes from there, so a
batch is neither lost nor written twice, and the hot path stays a plain COPY.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

import asyncpg

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import RetryableError
from nexanest.schemas.ticks import Tick

COLUMNS: Final = (
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
)
StockPriceRow = tuple[datetime, str, Decimal, Decimal, Decimal | None, Decimal | None, str, str, int, int, int]
TopicPartition = tuple[str, int]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Errors after which the same transaction may succeed later. Anything else from
# the database (a constraint or data error) is a bug and propagates.
RETRYABLE_DB_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


def e9_to_decimal(value_e9: int) -> Decimal:
    return Decimal(value_e9).scaleb(-9)


def ns_to_datetime(ts_ns: int) -> datetime:
    """Exact to the microsecond (PostgreSQL's resolution), unlike a float division."""
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)


def stock_price_row(tick: Tick, partition: int, offset: int) -> StockPriceRow:
    bid, ask = tick.bid_e9, tick.ask_e9
    return (
        ns_to_datetime(tick.ts_ns),
        tick.symbol,
        e9_to_decimal(tick.price_e9),
        e9_to_decimal(tick.size_e9),
        None if bid is None else e9_to_decimal(bid),
        None if ask is None else e9_to_decimal(ask),
        tick.exchange,
        tick.source,
        tick.seq,
        partition,
        offset,
    )


class TimescaleSink:
    """Buffers ``stock_prices`` rows and the offsets they advance to.

    ``flush`` is one transaction: COPY the rows, upsert the offsets. On a
    retryable error the buffer is kept and ``flush`` can be called again.
    """

    name = "timescale"

    def __init__(self, pool: asyncpg.Pool, consumer_group: str, table: str = "stock_prices") -> None:
        self._pool = pool
        self._group = consumer_group
        self._table = table
        self._rows: list[StockPriceRow] = []
        self._offsets: dict[TopicPartition, int] = {}

    def write(self, rows: Sequence[StockPriceRow]) -> None:
        self._rows.extend(rows)

    def advance(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Record that the buffered rows consume the log up to ``next_offsets``."""
        self._offsets.update(next_offsets)

    async def flush(self) -> int:
        if not self._rows and not self._offsets:
            return 0
        started = time.perf_counter()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if self._rows:
                    await conn.copy_records_to_table(self._table, records=self._rows, columns=COLUMNS)
                if self._offsets:
                    await conn.executemany(
                        """
                        INSERT INTO ingest_offsets (consumer_group, topic, partition, next_offset)
                        VALUES ($1, $2, $3, $4)
                        ON CONFLICT (consumer_group, topic, partition)
                        DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()
                        """,
                        [(self._group, topic, part, off) for (topic, part), off in self._offsets.items()],
                    )
        except RETRYABLE_DB_ERRORS as exc:
            raise RetryableError("timescaledb", exc) from exc
        written = len(self._rows)
        metrics.FLUSH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.TICKS_WRITTEN.labels(self.name).inc(written)
        self._rows = []
        self._offsets = {}
        return written

    async def stored_offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition, as the database last committed it."""
        try:
            rows = await self._pool.fetch(
                "SELECT partition, next_offset FROM ingest_offsets WHERE consumer_group = $1 AND topic = $2",
                self._group,
                topic,
            )
        except RETRYABLE_DB_ERRORS as exc:
            raise RetryableError("timescaledb", exc) from exc
        return {r["partition"]: r["next_offset"] for r in rows}

    async def close(self) -> None:
        """The pool belongs to the caller; nothing buffered survives a close."""
        self._rows = []
        self._offsets = {}
