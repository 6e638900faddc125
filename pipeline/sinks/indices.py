"""``IndexSink``: market indices computed from the ticks as they flow.

Each configured index (``settings.indices``, an ``IndexDefinition``) is a
function of the latest price of each of its constituents. The sink keeps those
prices in memory, and for every batch in which a constituent got a newer tick
it computes the index once, stores a row in ``market_indices`` and quotes it in
Redis as ``quote:<INDEX>`` (``price`` is the value, ``exchange`` is ``INDEX``).
An index publishes nothing until every constituent has a price.

The consumer flushes it after the batch's TimescaleDB transaction committed
(``IngestLoop(after_commit=...)``): indices are derived data, so they must not
hold up or roll back the ticks. What that costs, and what makes it safe:

- ``write`` only buffers the constituents' ticks; ``flush`` applies them,
  computes and stores. A batch discarded after a fence therefore leaves the
  prices untouched, and a flush retried after a failure recomputes nothing.
- A row's time is the newest tick time among the constituents' prices, moved
  1 µs past the index's previous row if it would not be later: every row of an
  index has its own time, and the rows are in the order they were computed.
  ``market_indices`` has a unique rule on ``(index_name, time)`` and rows are
  inserted with ``ON CONFLICT DO NOTHING``, so an insert retried after a lost
  connection (that had committed after all) adds nothing.
- ``seed`` (at start) loads the latest stored tick of every constituent and the
  time of each index's last row, so a restarted consumer continues the series.
  A crash between the ticks' commit and this flush loses that batch's index row
  only: the next batch's value includes its prices (they are stored and seeded).
- Prices are compared by (tick time in µs, seq), the resolution
  ``stock_prices`` keeps, so a seeded tick and the same tick read again from
  Kafka are one.
- With several consumers in a group each sees only its partitions' symbols.
  Every ``refresh_s`` seconds (before computing) the sink re-reads the latest
  stored price of every constituent, so a price another consumer ingests is
  at most that old (plus its commit delay) when this one uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final

import asyncpg

from nexanest.pipeline import metrics
from nexanest.pipeline.db import RETRYABLE_DB_ERRORS
from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import IndexDefinition
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.schemas.ticks import Tick

_log = get_logger(__name__)

#: Exchange field of an index quote in Redis.
INDEX_EXCHANGE: Final = "INDEX"
#: ``market_indices.value`` is NUMERIC(20, 9): values must stay below 1e11.
_MAX_VALUE: Final = Decimal(10) ** 11
_E9: Final = Decimal("1e-9")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

IndexRow = tuple[datetime, str, Decimal, int, str]  # time, index_name, value, constituents, method

_INSERT: Final = """
INSERT INTO market_indices (time, index_name, value, constituents, method)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::numeric[], $4::int[], $5::text[])
ON CONFLICT DO NOTHING
"""

# One backward index probe per symbol on (symbol, time DESC), newest chunk first.
_LATEST_PRICES: Final = """
SELECT s.symbol, t.time, t.source_seq, t.price
  FROM unnest($1::text[]) AS s(symbol)
 CROSS JOIN LATERAL (
       SELECT time, source_seq, price FROM stock_prices p
        WHERE p.symbol = s.symbol AND p.time > now() - make_interval(secs => $2)
        ORDER BY time DESC, source_seq DESC LIMIT 1) AS t
"""

_LAST_ROWS: Final = """
SELECT n.index_name, t.time
  FROM unnest($1::text[]) AS n(index_name)
 CROSS JOIN LATERAL (
       SELECT time FROM market_indices m WHERE m.index_name = n.index_name ORDER BY time DESC LIMIT 1) AS t
"""


@dataclass(frozen=True, slots=True)
class Price:
    """The latest tick of a constituent: its order key and its price."""

    ts_us: int
    seq: int
    price_e9: int


def index_value(definition: IndexDefinition, prices_e9: dict[str, int]) -> Decimal:
    """The index over ``prices_e9`` (a price, scaled by 1e9, per constituent),
    exact to the 9 decimals ``market_indices`` keeps (half-even rounding)."""
    with localcontext() as ctx:
        ctx.prec = 60
        prices = [Decimal(prices_e9[s]).scaleb(-9) for s in definition.symbols]
        if definition.method == "price_weighted":
            divisor = definition.divisor if definition.divisor is not None else Decimal(len(prices))
            value = sum(prices, Decimal(0)) / divisor
        else:
            base = definition.base_prices or {}
            ratios = [p / base[s] for s, p in zip(definition.symbols, prices, strict=True)]
            value = definition.base_value * sum(ratios, Decimal(0)) / len(ratios)
        return value.quantize(_E9, rounding=ROUND_HALF_EVEN)


def _us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _datetime_to_us(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


class IndexSink:
    """Buffers constituents' ticks; ``flush`` computes, stores and quotes the indices.

    ``flush`` raises ``RetryableError`` when TimescaleDB or Redis is away; what
    it had computed is kept, so calling it again finishes the same work.
    """

    name = "market_indices"

    def __init__(
        self,
        pool: asyncpg.Pool,
        quotes: RedisQuoteSink,
        definitions: Sequence[IndexDefinition],
        *,
        seed_window_s: float = 7 * 24 * 3600.0,
        refresh_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._quotes = quotes
        self._definitions = list(definitions)
        self._by_symbol: dict[str, list[IndexDefinition]] = {}
        for d in self._definitions:
            for symbol in d.symbols:
                self._by_symbol.setdefault(symbol, []).append(d)
        self._seed_window_s = seed_window_s
        self._refresh_s = refresh_s
        self._clock = clock
        self._refreshed_at: float | None = None
        self._prices: dict[str, Price] = {}
        self._last_us: dict[str, int] = {}
        self._ticks: list[Tick] = []
        self._rows: list[IndexRow] = []

    @property
    def prices(self) -> dict[str, Price]:
        """The latest known price per constituent (read-only use)."""
        return self._prices

    def write(self, rows: Sequence[Tick]) -> None:
        """Keep the ticks of constituents for the next flush (no I/O)."""
        wanted = self._by_symbol
        self._ticks.extend(t for t in rows if t.symbol in wanted)

    def discard(self) -> None:
        """Forget the buffered ticks (their batch was rolled back and will be read again)."""
        self._ticks = []

    async def seed(self) -> int:
        """Load constituents' latest stored prices and each index's last row time.

        Returns how many constituents got a price. Raises ``RetryableError``.
        """
        await self._refresh()
        try:
            rows = await self._pool.fetch(_LAST_ROWS, [d.name for d in self._definitions])
        except RETRYABLE_DB_ERRORS as exc:
            raise RetryableError("timescaledb", exc) from exc
        for r in rows:
            self._last_us[r["index_name"]] = max(self._last_us.get(r["index_name"], 0), _datetime_to_us(r["time"]))
        return len(self._prices)

    async def flush(self) -> int:
        """Compute the indices the buffered ticks moved, store and quote them.
        Returns the rows stored."""
        if not self._ticks and not self._rows:
            await self._quotes.flush(observe_latency=False)  # a quote left by a failed flush, if any
            return 0
        started = time.perf_counter()
        if self._ticks:
            if self._refresh_s > 0 and (
                self._refreshed_at is None or self._clock() - self._refreshed_at >= self._refresh_s
            ):
                await self._refresh()
            self._compute()
        written = 0
        if self._rows:
            rows = self._rows
            try:
                await self._pool.execute(_INSERT, *map(list, zip(*rows, strict=True)))
            except RETRYABLE_DB_ERRORS as exc:
                raise RetryableError("timescaledb", exc) from exc
            written = len(rows)
            self._rows = []
        await self._quotes.flush(observe_latency=False)
        metrics.FLUSH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.TICKS_WRITTEN.labels(self.name).inc(written)
        return written

    async def close(self) -> None:
        self._ticks = []
        self._rows = []

    async def _refresh(self) -> None:
        """Merge in the latest stored price of every constituent (newer wins)."""
        try:
            rows = await self._pool.fetch(_LATEST_PRICES, list(self._by_symbol), self._seed_window_s)
        except RETRYABLE_DB_ERRORS as exc:
            raise RetryableError("timescaledb", exc) from exc
        for r in rows:
            stored = Price(_datetime_to_us(r["time"]), r["source_seq"], int(r["price"].scaleb(9)))
            held = self._prices.get(r["symbol"])
            if held is None or (stored.ts_us, stored.seq) > (held.ts_us, held.seq):
                self._prices[r["symbol"]] = stored
        self._refreshed_at = self._clock()

    def _compute(self) -> None:
        """Apply the buffered ticks; one row and one quote per index they moved."""
        prices = self._prices
        moved: set[str] = set()
        for t in self._ticks:
            ts_us = t.ts_ns // 1000
            held = prices.get(t.symbol)
            if held is None or (ts_us, t.seq) > (held.ts_us, held.seq):
                prices[t.symbol] = Price(ts_us, t.seq, t.price_e9)
                moved.update(d.name for d in self._by_symbol[t.symbol])
        self._ticks = []
        quotes: list[Tick] = []
        for d in self._definitions:
            if d.name not in moved:
                continue
            held_prices = [prices.get(s) for s in d.symbols]
            known = [p for p in held_prices if p is not None]
            if len(known) < len(held_prices):
                continue  # not every constituent has a price yet
            value = index_value(d, {s: p.price_e9 for s, p in zip(d.symbols, known, strict=True)})
            if abs(value) >= _MAX_VALUE:
                _log.error("index_value_out_of_range", index=d.name, value=str(value))
                continue
            at_us = max(max(p.ts_us for p in known), self._last_us.get(d.name, -1) + 1)
            self._last_us[d.name] = at_us
            self._rows.append((_us_to_datetime(at_us), d.name, value, len(known), d.method))
            quotes.append(
                Tick(
                    symbol=d.name,
                    exchange=INDEX_EXCHANGE,
                    price_e9=int(value.scaleb(9)),
                    size_e9=0,
                    ts_ns=at_us * 1000,
                    source="index",
                    seq=0,
                )
            )
        self._quotes.write(quotes)
