"""``BarCacheSink``: the latest OHLCV bars of each symbol, cached in Redis for dashboards.

An after-commit sink (``IngestLoop(after_commit=...)``), used only when the
pipeline keeps the rollups (Apache edition). After a batch's TimescaleDB
transaction commits, ``flush`` takes the merged bars that transaction's upsert
returned (``TimescaleSink.take_flushed_bars``: per resolution, the latest bar of
each symbol the batch touched, as stored, not the batch's partial bar) and
writes them in one round trip to the analytics database
(``settings.redis.db_analytics``).

A bar is a hash ``bar:<resolution>:<SYMBOL>`` with ``bucket`` (ISO 8601, UTC),
``bucket_ns`` (epoch ns), ``open``, ``high``, ``low``, ``close``, ``volume``,
``trade_count``, ``vwap`` (decimal strings, as the ``ohlcv_*`` views give them;
``vwap`` empty for a bar of zero volume) and ``updated_ns`` (when the pipeline
wrote it). A small Lua script applies a batch atomically and never moves a
cached bar backwards: a later bucket or the same bucket (a merged, newer state
of that bar) replaces it, an older bucket (a late tick's bar) does not.

A failed flush keeps its bars and the next flush sends them again (merged with
newer ones, latest bucket wins), so the cache catches up once Redis is back. A
crash between the commit and this flush leaves the cache one batch behind until
the symbol's next batch. Another consumer of the group writing the same symbol
(a rebalance overlap) cannot move a cached bar to an older bucket either; of
two merged states of the same bucket, the one written last is kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final, Protocol

import redis.asyncio as redis

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.sinks.ohlcv import Resolution, StoredBar
from nexanest.pipeline.sinks.redis_quotes import RETRYABLE_REDIS_ERRORS
from nexanest.schemas.ticks import Tick

# Bucket times are compared as decimal strings (by length, then lexically): Lua
# numbers are doubles and would round 19-digit nanoseconds. Buckets are never
# before 1970 (ticks' ts_ns are non-negative), so there is no sign to handle.
_APPLY_BARS: Final = """
local function older(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local n = 10
local applied = 0
for i, key in ipairs(KEYS) do
  local b = (i - 1) * n
  local bucket_ns = ARGV[b + 1]
  local cur = redis.call('HGET', key, 'bucket_ns')
  if not cur or not older(bucket_ns, cur) then
    redis.call('HSET', key, 'bucket_ns', bucket_ns, 'bucket', ARGV[b + 2], 'open', ARGV[b + 3],
      'high', ARGV[b + 4], 'low', ARGV[b + 5], 'close', ARGV[b + 6], 'volume', ARGV[b + 7],
      'trade_count', ARGV[b + 8], 'vwap', ARGV[b + 9], 'updated_ns', ARGV[b + 10])
    applied = applied + 1
  end
end
return applied
"""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Bars per script call (see ``flush``).
_BARS_PER_CALL: Final = 200

CacheKey = tuple[Resolution, str]  # (resolution, symbol)


class FlushedBars(Protocol):
    """Where the committed bars come from: ``TimescaleSink`` with rollups on."""

    def take_flushed_bars(self) -> list[StoredBar]: ...


def bucket_ns(bucket: datetime) -> int:
    """Epoch nanoseconds of a bucket start, exact (buckets are whole microseconds)."""
    return (bucket - _EPOCH) // timedelta(microseconds=1) * 1000


def _decimal(value: Decimal | None) -> str:
    # Fixed-point, never exponent notation: the value's own digits, as the view gives them.
    return "" if value is None else format(value, "f")


def bar_key(key_prefix: str, resolution: Resolution, symbol: str) -> str:
    return f"{key_prefix}{resolution}:{symbol}"


class BarCacheSink:
    """Caches the latest merged bar per symbol and resolution after each commit.

    ``flush`` raises ``RetryableError`` when Redis is away; the bars are kept,
    so calling it again finishes the same work.
    """

    name = "redis_bars"

    def __init__(self, client: redis.Redis, source: FlushedBars, key_prefix: str = "bar:") -> None:
        self._client = client
        self._source = source
        self._prefix = key_prefix
        self._script = client.register_script(_APPLY_BARS)
        self._pending: dict[CacheKey, StoredBar] = {}

    def write(self, rows: Sequence[Tick]) -> None:
        """Nothing to buffer: the bars come from the committed transaction at flush."""

    def discard(self) -> None:
        """The batch was rolled back (fenced): its bars were never committed or taken.
        What an earlier failed flush kept was committed and stays."""

    async def flush(self) -> int:
        """Write the last committed batch's bars (and any a failed flush kept) in
        one round trip. Returns the bars sent."""
        pending = self._pending
        for bar in self._source.take_flushed_bars():
            key = (bar.resolution, bar.symbol)
            held = pending.get(key)
            # Later batches' bars of the same bucket are later merged states: they win.
            if held is None or bar.bucket >= held.bucket:
                pending[key] = bar
        if not pending:
            return 0
        started = time.perf_counter()
        bars = list(pending.values())
        updated_ns = str(time.time_ns())
        # In parts: a batch over 300 symbols is 1,200 bars, 12,000 arguments, tens of
        # ms to format and pack at once; each part is a round trip, and between
        # them the event loop runs the consumer's fetching and quotes.
        for start in range(0, len(bars), _BARS_PER_CALL):
            part = bars[start : start + _BARS_PER_CALL]
            keys = [bar_key(self._prefix, b.resolution, b.symbol) for b in part]
            args: list[str] = []
            for b in part:
                args += (
                    str(bucket_ns(b.bucket)),
                    b.bucket.astimezone(UTC).isoformat(),
                    _decimal(b.open),
                    _decimal(b.high),
                    _decimal(b.low),
                    _decimal(b.close),
                    _decimal(b.volume),
                    str(b.trade_count),
                    _decimal(b.vwap),
                    updated_ns,
                )
            try:
                await self._script(keys=keys, args=args)
            except RETRYABLE_REDIS_ERRORS as exc:
                # The parts already applied are applied again on the retry: a no-op.
                raise RetryableError("redis", exc) from exc
        self._pending = {}
        metrics.FLUSH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.TICKS_WRITTEN.labels(self.name).inc(len(bars))
        return len(bars)

    async def close(self) -> None:
        self._pending = {}


async def read_bar(
    client: redis.Redis, resolution: Resolution, symbol: str, key_prefix: str = "bar:"
) -> dict[str, str]:
    """The cached bar hash of ``symbol`` at ``resolution``, decoded; empty when none."""
    raw = await client.hgetall(bar_key(key_prefix, resolution, symbol))
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()
