"""``RedisQuoteSink``: the latest quote of each symbol, one round trip per batch.

A quote is a hash ``quote:<SYMBOL>`` with ``price``, ``bid``, ``ask``, ``size``
(decimal strings), ``exchange``, ``ts_ns`` (the tick's exchange time), ``seq``
and ``updated_ns`` (when the pipeline wrote it). A small Lua script applies a
batch atomically and only moves a quote forward in tick time, so a late or
replayed tick never overwrites a newer quote, and two writers of the same ticks
(the consumer and the quote fast path, ``consumers/ticks_to_quotes.py``) are
harmless together. It returns which quotes it moved: the latency histogram
counts those only, so each tick is observed once, by the writer that made its
quote visible.

Quote updates, published
------------------------
The same script PUBLISHes every quote it moved forward (and nothing for a
quote it left alone), so readers learn of changes without polling and without
a second round trip from the consumer. One channel per symbol,
``<key prefix>updates:<SYMBOL>`` (``quote_channel``), rather than one channel
for all: Redis then sends an update only to the subscribers of that symbol,
so a reader following ten symbols receives ten symbols' updates, not the whole
market's, and a PUBLISH to a channel nobody follows costs a dictionary lookup
and sends nothing. (Pattern subscriptions would undo this: every PUBLISH is
matched against every pattern; readers subscribe to channels by name.) The
channel derives from the key prefix because pub/sub ignores Redis database
numbers: namespaced key prefixes (tests, side-by-side runs) keep their updates
apart too.

The message is the quote, fields separated by one space, ``exchange`` last
(the only field that may hold a space):
``<ts_ns> <seq> <price> <bid> <ask> <size> <updated_ns> <exchange>``, bid and
ask empty when the tick had none (``parse_quote_update`` reads it). A change
of this format takes a new channel name, so old readers never misread it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final, NamedTuple

import redis.asyncio as redis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from nexanest.pipeline import metrics
from nexanest.pipeline.errors import RetryableError
from nexanest.schemas.ticks import Tick, format_e9

# Timestamps and sequence numbers are compared as decimal strings (by length,
# then lexically): Lua numbers are doubles and would round 19-digit nanoseconds.
_APPLY_QUOTES: Final = """
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local n = 8
local channels = ARGV[1]
local prefix_len = tonumber(ARGV[2])
local applied = {}
for i, key in ipairs(KEYS) do
  local b = 2 + (i - 1) * n
  local ts, seq = ARGV[b + 1], ARGV[b + 2]
  local cur = redis.call('HMGET', key, 'ts_ns', 'seq')
  local take = true
  if cur[1] then
    if ts == cur[1] then
      take = newer(seq, cur[2] or '')
    else
      take = newer(ts, cur[1])
    end
  end
  if take then
    redis.call('HSET', key, 'ts_ns', ts, 'seq', seq, 'price', ARGV[b + 3], 'bid', ARGV[b + 4],
      'ask', ARGV[b + 5], 'size', ARGV[b + 6], 'exchange', ARGV[b + 7], 'updated_ns', ARGV[b + 8])
    if channels ~= '' then
      redis.call('PUBLISH', channels .. string.sub(key, prefix_len + 1), ts .. ' ' .. seq .. ' ' .. ARGV[b + 3]
        .. ' ' .. ARGV[b + 4] .. ' ' .. ARGV[b + 5] .. ' ' .. ARGV[b + 6] .. ' ' .. ARGV[b + 8] .. ' ' .. ARGV[b + 7])
    end
    applied[#applied + 1] = i
  end
end
return applied
"""

RETRYABLE_REDIS_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)


class RedisQuoteSink:
    name = "redis_quotes"

    def __init__(
        self, client: redis.Redis, key_prefix: str = "quote:", *, name: str = "redis_quotes", publish: bool = True
    ) -> None:
        """``publish=False`` writes quotes without publishing them (the benchmark's
        baseline); the consumer always publishes."""
        self.name = name  # the metrics label: index quotes count apart from symbol quotes
        self._client = client
        self._prefix = key_prefix
        self._script = client.register_script(_APPLY_QUOTES)
        self._script_head = [quote_channel(key_prefix, "") if publish else "", str(len(key_prefix))]
        self._latest: dict[str, Tick] = {}

    def write(self, rows: Sequence[Tick]) -> None:
        """Keep only the latest tick per symbol: Redis sees one update per symbol."""
        latest = self._latest
        for tick in rows:
            held = latest.get(tick.symbol)
            # Later in (tick time, seq), inlined: this runs once per tick.
            if held is None or tick.ts_ns > held.ts_ns or (tick.ts_ns == held.ts_ns and tick.seq > held.seq):
                latest[tick.symbol] = tick

    async def flush(self, *, observe_latency: bool = True) -> int:
        """Apply the buffered quotes in one round trip, publishing those that moved
        forward; ``observe_latency=False`` for re-applied old ticks (a rebuild),
        which would read as huge latencies."""
        if not self._latest:
            return 0
        started = time.perf_counter()
        ticks = list(self._latest.values())
        updated_ns = str(time.time_ns())
        keys = [self._prefix + t.symbol for t in ticks]
        args = list(self._script_head)
        for t in ticks:
            args += (
                str(t.ts_ns),
                str(t.seq),
                format_e9(t.price_e9),
                "" if t.bid_e9 is None else format_e9(t.bid_e9),
                "" if t.ask_e9 is None else format_e9(t.ask_e9),
                format_e9(t.size_e9),
                t.exchange,
                updated_ns,
            )
        try:
            applied = await self._script(keys=keys, args=args)
        except RETRYABLE_REDIS_ERRORS as exc:
            raise RetryableError("redis", exc) from exc
        visible_ns = time.time_ns()
        metrics.FLUSH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.TICKS_WRITTEN.labels(self.name).inc(len(ticks))
        if observe_latency:
            # Only the quotes this flush made visible: a tick another writer (the
            # quote fast path beside the consumer) already applied was visible then.
            for i in applied:
                metrics.TICK_TO_QUOTE_SECONDS.observe(max(0, visible_ns - ticks[i - 1].ts_ns) / 1e9)
        self._latest = {}
        return len(ticks)

    def discard(self) -> None:
        self._latest = {}

    async def close(self) -> None:
        self._latest = {}


def quote_channel(key_prefix: str, symbol: str) -> str:
    """The channel on which the quote of ``symbol`` (key ``<key_prefix><symbol>``) is published."""
    return f"{key_prefix}updates:{symbol}"


class QuoteUpdate(NamedTuple):
    """One published quote (decimal strings as in the hash; bid and ask ``None`` when absent)."""

    ts_ns: int
    seq: int
    price: str
    bid: str | None
    ask: str | None
    size: str
    updated_ns: int
    exchange: str


def parse_quote_update(message: bytes) -> QuoteUpdate:
    """Read a message of a quote channel; raises ``ValueError`` when it is not one."""
    fields = message.decode().split(" ", 7)
    if len(fields) != 8:
        raise ValueError(f"a quote update has 8 fields, this one {len(fields)}")
    ts_ns, seq, price, bid, ask, size, updated_ns, exchange = fields
    return QuoteUpdate(int(ts_ns), int(seq), price, bid or None, ask or None, size, int(updated_ns), exchange)


async def read_quote(client: redis.Redis, symbol: str, key_prefix: str = "quote:") -> dict[str, str]:
    """The quote hash of ``symbol``, decoded; empty when the symbol has none."""
    raw = await client.hgetall(key_prefix + symbol)
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()
