"""``QuoteHub``: one Redis pub/sub connection per process, fanning quote updates out to streams.

The consumer publishes each quote it moves forward on the symbol's own channel
(``pipeline/sinks/redis_quotes.py``). The hub subscribes to a channel while at
least one stream of this process follows that symbol, and unsubscribes when the
last one leaves, so Redis sends this process only the symbols its clients
follow, once each, however many clients follow them. Each message is parsed and
rendered as a server-sent event once, and the same bytes go to every stream
that follows the symbol.

Every stream has a bounded queue (``Subscription``). The hub never waits for a
stream: an update that finds a queue full drops that stream at once (its
pending updates are discarded, and its stream ends with a ``dropped`` event),
so one slow client costs at most its queue, and never holds up the others or
the reading of Redis.

``subscribe`` returns once Redis has confirmed every channel, so that a
snapshot read afterwards misses no update (one published in between arrives
through the queue too; the stream skips what the snapshot already holds).
While the connection is being re-established after a failure, updates are
lost; redis-py subscribes the channels again when it reconnects.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as redis
from redis.asyncio.client import PubSub

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import RedisSettings, RetrySettings
from nexanest.pipeline.sinks.redis_quotes import RETRYABLE_REDIS_ERRORS, parse_quote_update, quote_channel
from nexanest.services.app import Resource
from nexanest.services.market_data.models import Quote

_log = get_logger("nexanest.services.market_data.hub")

#: How long the reader waits for a message before it looks again (and redis-py
#: sends its health-check PING when one is due).
_POLL_S: Final = 1.0
#: The reader's waits between reconnection attempts: from 0.1 s up to 5 s, jittered
#: so that the processes that lost Redis together do not all come back at once.
_RECONNECT: Final = RetrySettings(initial_backoff_s=0.1, max_backoff_s=5.0)


@dataclass(frozen=True, slots=True)
class StreamUpdate:
    """A quote update, ready to send: ``event`` is the whole server-sent event."""

    symbol: str
    ts_ns: int
    seq: int
    event: bytes


def render_event(quote: Quote) -> bytes:
    """The server-sent event of a quote (``event: quote``, its JSON as ``data``)."""
    return b"event: quote\r\ndata: " + quote.model_dump_json().encode() + b"\r\n\r\n"


class Subscription:
    """One stream's share of the hub: the symbols it follows and a bounded queue
    of their updates. Read with ``get``; ``None`` means the hub dropped it."""

    def __init__(self, channels: frozenset[bytes], queue_size: int) -> None:
        self.channels = channels
        self._queue: asyncio.Queue[StreamUpdate | None] = asyncio.Queue(queue_size)
        self.dropped = False
        self.closed = False
        #: The most updates it ever held at once (never more than its bound).
        self.high_water = 0

    async def get(self) -> StreamUpdate | None:
        """The next update; ``None`` once dropped. Blocks until one arrives."""
        return await self._queue.get()

    def take_waiting(self, most: int) -> list[StreamUpdate | None]:
        """Up to ``most`` updates that wait already, without blocking (``None`` last, if dropped)."""
        taken: list[StreamUpdate | None] = []
        while len(taken) < most and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    def _offer(self, update: StreamUpdate) -> bool:
        try:
            self._queue.put_nowait(update)
        except asyncio.QueueFull:
            return False
        self.high_water = max(self.high_water, self._queue.qsize())
        return True

    def _drop(self) -> None:
        """Discard what waits and leave only the end mark."""
        self.dropped = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class QuoteHub:
    """Follows quote channels on one pub/sub connection for the streams of a process.

    ``start`` before use, ``close`` at the end (``quote_hub`` does both as a
    resource). ``subscribe``/``unsubscribe`` may be called from any task of the
    loop; ``unsubscribe`` never blocks, so a stream can call it while being
    cancelled."""

    def __init__(self, client: redis.Redis, key_prefix: str, *, queue_size: int) -> None:
        self._client = client
        self._pubsub: PubSub = client.pubsub()
        self._prefix = quote_channel(key_prefix, "").encode()
        self._queue_size = queue_size
        self._holders: dict[bytes, set[Subscription]] = {}
        self._confirmed: dict[bytes, asyncio.Event] = {}
        self._lock = asyncio.Lock()  # orders SUBSCRIBE/UNSUBSCRIBE with the bookkeeping
        self._reader: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(_RECONNECT)
        #: Streams following now, streams dropped so far, and the most updates one
        #: stream that has ended ever held waiting (never above the queue bound).
        self.streams = 0
        self.dropped_total = 0
        self.most_queued = 0
        #: The Redis client name of its connection, when it was given one.
        self.client_name: str | None = None

    async def start(self) -> None:
        """Connect (raises when Redis does not answer) and start reading."""
        await self._pubsub.connect()  # type: ignore[no-untyped-call] # redis-py leaves it unannotated
        self._reader = asyncio.create_task(self._read(), name="quote-hub-reader")

    async def close(self) -> None:
        for task in (self._reader, *self._releases):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        await self._pubsub.aclose()  # type: ignore[no-untyped-call] # redis-py leaves it unannotated

    async def check(self) -> None:
        """Raises unless the reader runs on a connected pub/sub connection (``/readyz``)."""
        if self._reader is None or self._reader.done():
            raise RuntimeError("the quote hub is not reading")
        connection: Any = self._pubsub.connection  # typed as always None by redis-py
        if connection is None or not connection.is_connected or self._backoff.attempts:
            raise ConnectionError("the quote hub's pub/sub connection is down")

    async def subscribe(self, symbols: Sequence[str], *, timeout_s: float = 5.0) -> Subscription:
        """Follow ``symbols``; returns once Redis confirmed every channel. Raises
        ``TimeoutError`` (nothing stays subscribed) when it does not within
        ``timeout_s``, and Redis's connection errors."""
        channels = frozenset(self._prefix + s.encode() for s in symbols)
        subscription = Subscription(channels, self._queue_size)
        self.streams += 1
        try:
            async with self._lock:
                new = []
                for channel in channels:
                    holders = self._holders.get(channel)
                    if holders is None:
                        self._holders[channel] = {subscription}
                        self._confirmed[channel] = asyncio.Event()
                        new.append(channel)
                    else:
                        holders.add(subscription)
                if new:
                    await self._pubsub.subscribe(*new)
            confirmations = [self._confirmed[c].wait() for c in channels if c in self._confirmed]
            await asyncio.wait_for(asyncio.gather(*confirmations), timeout_s)
        except BaseException:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding ``subscription``; channels nobody follows any more are
        unsubscribed in the background. Idempotent; never blocks."""
        if subscription.closed:
            return
        subscription.closed = True
        self.streams -= 1
        self.most_queued = max(self.most_queued, subscription.high_water)
        emptied = []
        for channel in subscription.channels:
            holders = self._holders.get(channel)
            if holders is not None:
                holders.discard(subscription)
                if not holders:
                    emptied.append(channel)
        if emptied:
            task = asyncio.get_running_loop().create_task(self._release(emptied))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, channels: list[bytes]) -> None:
        async with self._lock:
            # A stream may have followed a channel again since it emptied.
            gone = [c for c in channels if c in self._holders and not self._holders[c]]
            for channel in gone:
                del self._holders[channel]
                del self._confirmed[channel]
            if gone:
                try:
                    await self._pubsub.unsubscribe(*gone)
                except RETRYABLE_REDIS_ERRORS as exc:
                    # The connection is gone, and with it the subscription; redis-py
                    # would subscribe it again on reconnect, so forget it there too.
                    for channel in gone:
                        self._pubsub.channels.pop(channel, None)
                    _log.warning("quote_hub_unsubscribe_failed", error=type(exc).__name__)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=_POLL_S)
            except RETRYABLE_REDIS_ERRORS as exc:
                delay = self._backoff.next_delay()
                _log.warning("quote_hub_disconnected", error=type(exc).__name__, retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            if self._backoff.attempts:
                self._backoff.reset()
                _log.info("quote_hub_reconnected")
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                try:
                    self._dispatch(message["channel"], message["data"])
                except Exception as exc:  # noqa: BLE001 - one bad update must not stop every stream
                    _log.error("quote_update_failed", error=type(exc).__name__, exc_info=exc)
            elif kind == "subscribe":
                confirmed = self._confirmed.get(message["channel"])
                if confirmed is not None:
                    confirmed.set()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        holders = self._holders.get(channel)
        if not holders:
            return  # an update in flight while its channel was being released
        symbol = channel[len(self._prefix) :].decode()
        try:
            u = parse_quote_update(data)
            quote = Quote.from_fields(
                symbol,
                ts_ns=u.ts_ns,
                seq=u.seq,
                price=u.price,
                bid=u.bid,
                ask=u.ask,
                size=u.size,
                exchange=u.exchange,
                updated_ns=u.updated_ns,
            )
        except ValueError:  # not a quote update (pydantic's ValidationError is one too)
            _log.warning("quote_update_unreadable", symbol=symbol, bytes=len(data))
            return
        update = StreamUpdate(symbol, u.ts_ns, u.seq, render_event(quote))
        for subscription in list(holders):
            if not subscription._offer(update):
                self._drop(subscription)

    def _drop(self, subscription: Subscription) -> None:
        subscription._drop()
        self.unsubscribe(subscription)
        self.dropped_total += 1
        _log.warning("stream_dropped", reason="queue_full", queue=self._queue_size, symbols=len(subscription.channels))


def quote_hub(name: str, settings: RedisSettings, *, queue_size: int) -> Resource[QuoteHub]:
    """The hub as a service resource: its own Redis connection (a subscribed
    connection can do nothing else), started with the app and checked by ``/readyz``."""

    @asynccontextmanager
    async def open_hub() -> AsyncIterator[QuoteHub]:
        # Named, so that an operator (CLIENT LIST) can tell the hub's connection apart.
        client_name = f"nexanest-market-data-hub-{uuid.uuid4().hex[:8]}"
        client = redis.Redis.from_url(
            settings.url.get_secret_value(),
            db=settings.db_quotes,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
            health_check_interval=10,
            client_name=client_name,
        )
        hub = QuoteHub(client, settings.quote_key_prefix, queue_size=queue_size)
        hub.client_name = client_name
        try:
            await hub.start()
            yield hub
        finally:
            await hub.close()
            await client.aclose()

    async def check(hub: QuoteHub) -> None:
        await hub.check()

    return Resource(name, open_hub, check)
