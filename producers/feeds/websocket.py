"""The life of an exchange websocket feed, written once for every venue.

A venue supplies a ``VenueParser`` (``venue_parser.py``): the URL, the subscribe
messages, and a ``parse`` that turns one frame into ticks (through the ``Normaliser``), sequence
gaps, a malformed-frame report, or a request to reconnect (a shutdown notice).
``WebSocketFeed`` does the rest:

* connects with the ``websockets`` asyncio client and sends the subscribe
  messages at once, before reading anything (Coinbase closes a connection that
  has not subscribed within 5 s); the library answers the venue's pings with
  pongs as frames arrive (Binance pings every 20 s and drops a connection whose
  pong is a minute late) and sends its own keepalive pings, so a dead TCP
  connection is noticed within ``ping_interval_s + ping_timeout_s``;
* reads in a task of its own, so pings are answered while the publisher waits
  for Kafka; the ticks it parsed wait in one bounded list that ``ticks()``
  takes whole (one batch per take: batches grow when the publisher is slow,
  and a tick never waits for a batch to fill). When the list is full the
  reader stops reading: the library buffers ``max_queue`` frames, then TCP
  pushes back on the venue (memory stays bounded; a venue that gives up on a
  slow reader disconnects, and the gap is reported after the reconnect);
* reconnects after every disconnect: an abrupt one (1006, no close frame),
  a close by the venue (1001 going away), a connection that stayed silent for
  ``idle_timeout_s``, a keepalive timeout, a refused connect; with the
  pipeline's backoff (``pipeline/retry.py``: exponential, capped, jittered),
  which restarts from its first step only after a connection that stayed up
  ``stable_after_s`` (30 s): a venue that accepts and drops at once, or sends a
  shutdown notice on every connection, meets growing delays, never a reconnect
  storm (Binance bans an address that opens more than 300 connections in 5
  minutes). A reconnect the venue asked for (a shutdown notice) or the
  connection age limit (Binance ends a connection after 24 hours:
  ``max_connection_age_s`` reconnects before that) happens at once, without a
  delay, when the connection was stable;
* never fails on a frame: anything ``parse`` cannot use is counted and
  reported to ``FeedObserver.malformed`` with a sample, and reading goes on.

An invalid URL is refused when the feed is made (``ValueError``). Nothing a
venue sends or does ends the feed; an exception of the observer would, and
``ticks()`` raises it after the ticks already taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.uri import parse_uri

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import RetrySettings
from nexanest.producers.feeds.adapter import FeedHealth, FeedObserver, NullObserver
from nexanest.producers.feeds.venue_parser import FrameResult, VenueParser, sample
from nexanest.schemas.ticks import Tick

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """How a websocket feed connects and when it gives a connection up."""

    open_timeout_s: float = 10.0
    #: Our own keepalive pings (``None``: none); a pong later than ``ping_timeout_s`` ends the connection.
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float = 5.0
    #: Reconnect, at once, when a connection is this old (``None``: never).
    max_connection_age_s: float | None = None
    #: Reconnect when no frame arrived for this long (``None``: never), e.g. a venue that
    #: sends heartbeats every second but stopped.
    idle_timeout_s: float | None = None
    max_message_bytes: int = 1 << 20
    #: Frames the library buffers before it stops reading the socket.
    max_queue_frames: int = 64
    #: Parsed ticks waiting for ``ticks()``; the reader waits above this.
    max_pending_ticks: int = 10_000
    retry: RetrySettings = field(default_factory=lambda: RetrySettings(initial_backoff_s=0.5, max_backoff_s=30.0))
    #: A connection up this long was a good one: the backoff starts again from its first step,
    #: and a reconnect the venue asked for may happen at once.
    stable_after_s: float = 30.0


class WebSocketFeed:
    """A ``FeedAdapter`` over a venue's websocket (see the module docstring).

    Subclasses set ``name`` and ``venue``. ``start`` begins connecting in a
    task and returns at once; ``ticks()`` yields batches in the venue's order
    until ``stop()``; ``stop()`` closes the connection and ends ``ticks()``
    after the ticks already parsed (idempotent, bounded by ``close_timeout_s``).
    """

    name: ClassVar[str] = "websocket"
    venue: ClassVar[str] = "WEBSOCKET"

    def __init__(self, parser: VenueParser, options: ConnectionOptions) -> None:
        self._url = parser.url()
        try:
            parse_uri(self._url)  # an invalid URL fails here, not in a reconnect loop
        except InvalidURI as exc:
            raise ValueError(f"{self.name}: not a websocket URL: {exc}") from exc
        self._parser = parser
        self._options = options
        self._health = FeedHealth()
        self._observer: FeedObserver = NullObserver()
        self._pending: list[Tick] = []
        self._ready = asyncio.Event()  # ticks are pending, or the connection task ended
        self._room = asyncio.Event()  # ticks() took the pending ticks
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        #: Connections opened (including the first); for tests and the status line.
        self.connections = 0

    @property
    def url(self) -> str:
        return self._url

    async def start(self, observer: FeedObserver) -> None:
        """Begin connecting (in a task); returns at once. Raises when called twice."""
        if self._task is not None:
            raise RuntimeError(f"{self.name}: start() was already called")
        self._observer = observer
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.name}")

    async def ticks(self) -> AsyncIterator[Sequence[Tick]]:
        """Batches of ticks in the venue's order, until ``stop()``. Each batch is
        everything parsed since the previous one (at most ``max_pending_ticks``
        plus one frame's ticks)."""
        task = self._task
        if task is None:
            raise RuntimeError(f"{self.name}: call start() before ticks()")
        health = self._health
        while True:
            await self._ready.wait()
            batch, self._pending = self._pending, []
            done = task.done()
            if not done:
                self._ready.clear()
                self._room.set()
            if batch:
                health.ticks += len(batch)
                health.last_tick_ns = batch[-1].ts_ns
                yield batch
            if done:
                break
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

    async def stop(self) -> None:
        """Close the connection and end ``ticks()``; idempotent."""
        self._stopping.set()
        self._room.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=self._options.close_timeout_s + 1.0)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def health(self) -> FeedHealth:
        return self._health

    # --- the connection task -------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self._options.retry)
        try:
            while not self._stopping.is_set():
                reason, at_once, lived_s = await self._connection()
                if self._stopping.is_set():
                    break
                stable = lived_s >= self._options.stable_after_s
                if stable:
                    backoff.reset()
                if at_once and stable:
                    self._health.detail = f"reconnecting: {reason}"
                    continue
                delay = backoff.next_delay()
                self._health.detail = f"reconnecting in {delay:.1f} s: {reason}"
                _log.warning("feed_reconnect_wait", feed=self.name, delay_s=round(delay, 3), reason=reason)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._health.connected = False
            self._health.detail = "stopped" if self._stopping.is_set() else self._health.detail
            self._ready.set()

    async def _connection(self) -> tuple[str, bool, float]:
        """One connection from connect to close; returns why it ended, whether
        the venue wants a reconnect at once, and how long it was up (0 when the
        connect failed). A connect that fails is reported in the status line
        only (the observer hears of connections that were made)."""
        o = self._options
        try:
            ws = await connect(
                self._url,
                open_timeout=o.open_timeout_s,
                ping_interval=o.ping_interval_s,
                ping_timeout=o.ping_timeout_s,
                close_timeout=o.close_timeout_s,
                max_size=o.max_message_bytes,
                max_queue=o.max_queue_frames,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            reason = f"connect failed: {exc}"
            self._health.detail = reason
            return reason, False, 0.0
        opened = time.monotonic()
        self._ws = ws
        self.connections += 1
        if self.connections > 1:
            self._health.reconnects += 1
        reason, at_once = "stopped", False
        try:
            if self._stopping.is_set():
                return reason, at_once, 0.0
            for message in self._parser.subscribe_messages():
                await ws.send(message)
            self._health.connected = True
            self._health.detail = f"connected to {self._url}"
            await self._observer.connected(f"{self.name}: connected to {self._url}")
            reason, at_once = await self._read(ws)
        except ConnectionClosed as exc:  # while subscribing
            reason = _closed(exc.rcvd.code if exc.rcvd else 1006, exc.rcvd.reason if exc.rcvd else "")
        finally:
            self._ws = None
            was_connected, self._health.connected = self._health.connected, False
            await ws.close()
        if self._stopping.is_set():
            reason, at_once = "stopped", False
        if was_connected:
            await self._observer.disconnected(f"{self.name}: {reason}")
        return reason, at_once, time.monotonic() - opened

    async def _read(self, ws: ClientConnection) -> tuple[str, bool]:
        o = self._options
        loop = asyncio.get_running_loop()
        age_limit = None if o.max_connection_age_s is None else loop.time() + o.max_connection_age_s
        idle = o.idle_timeout_s

        def deadline() -> float | None:
            if idle is None:
                return age_limit
            quiet = loop.time() + idle
            return quiet if age_limit is None else min(quiet, age_limit)

        out = FrameResult()
        parse = self._parser.parse
        try:
            async with asyncio.timeout(deadline()) as timer:
                async for frame in ws:
                    if self._stopping.is_set():
                        # Frames that arrive after stop() are dropped, but read: the
                        # venue's close frame is behind them.
                        continue
                    try:
                        parse(frame, out)
                    except Exception as exc:  # noqa: BLE001 - a parser bug must not end the feed: counted as malformed
                        out.malformed = ("parser_error", f"{exc!r}: {sample(frame)}")
                    if out.malformed is not None or out.gaps:
                        # Reports may wait on I/O (events): not the venue's silence.
                        timer.reschedule(None)
                    if out.malformed is not None:
                        await self._malformed(*out.malformed)
                    if out.notice is not None:
                        self._health.detail = f"venue says: {out.notice}"
                        _log.warning("feed_venue_notice", feed=self.name, notice=out.notice)
                    for stream, expected, received in out.gaps:
                        self._health.gaps += 1
                        await self._observer.gap(stream, expected, received)
                    if out.ticks:
                        await self._deliver(out.ticks, timer)
                    if out.reconnect is not None:
                        return f"venue asked to reconnect: {out.reconnect}", True
                    out.clear()
                    if age_limit is not None or idle is not None:
                        timer.reschedule(deadline())
        except TimeoutError:
            if age_limit is not None and loop.time() >= age_limit:
                return f"connection {o.max_connection_age_s:.0f} s old (the venue's limit is near)", True
            return f"no frame for {idle} s", False
        except ConnectionClosed:
            pass  # an abnormal close (1006, 1011): the code below says which
        if self._stopping.is_set():
            return "stopped", False
        return _closed(ws.close_code or 1006, ws.close_reason or ""), False

    async def _deliver(self, ticks: list[Tick], timer: asyncio.Timeout) -> None:
        """Hand the frame's ticks to ``ticks()``; wait while too many are pending
        (the idle timer is off meanwhile: the silence is ours, not the venue's)."""
        pending = self._pending
        pending.extend(ticks)
        self._ready.set()
        limit = self._options.max_pending_ticks
        if len(pending) < limit:
            return
        timer.reschedule(None)  # the reader sets the next deadline after the frame
        while len(self._pending) >= limit and not self._stopping.is_set():
            self._room.clear()
            await self._room.wait()

    async def _malformed(self, reason: str, sample: str) -> None:
        self._health.rejected += 1
        await self._observer.malformed(reason, sample)


def _closed(code: int, reason: str) -> str:
    kinds = {
        1000: "closed",
        1001: "going away",
        1006: "closed abnormally, no close frame",
        1011: "internal error or keepalive timeout",
    }
    kind = kinds.get(code, "closed")
    return f"{kind} ({code}{': ' + reason if reason else ''})"
