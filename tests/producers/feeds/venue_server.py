"""A local websocket server that plays scripted venue sessions to a feed adapter.

Each connection the server accepts plays the next ``Script`` of its list (the
last one again once the list is used up): frames recorded from the venues'
published message formats (``tests/data/feeds/<venue>/``), pings that must be
answered, and the ways a venue ends a connection: an abrupt drop (the transport
closed without a close frame: 1006 at the client), a close frame (1001 going
away), a shutdown notice followed by a drop. A server built with
``subscribe_within_s`` behaves as Coinbase does: a connection that sends no
message within that time is closed (1008).

What happened is recorded per connection (``Connection``: path, messages
received, time to the first message, pongs, how it ended), so tests assert
facts (reconnected, resubscribed, answered pings) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from nexanest.pipeline.settings import RetrySettings
from nexanest.producers.feeds.venue_parser import FrameResult, VenueParser
from nexanest.producers.feeds.websocket import WebSocketFeed
from nexanest.schemas.ticks import Tick

DATA = Path(__file__).resolve().parents[2] / "data" / "feeds"
#: Reconnect delays short enough for tests that wait for a reconnect.
FAST_RETRY = RetrySettings(initial_backoff_s=0.05, max_backoff_s=0.2)


def frames(venue: str, name: str) -> list[str]:
    """The recorded frames of ``tests/data/feeds/<venue>/<name>.jsonl``, one per line, as sent."""
    return (DATA / venue / f"{name}.jsonl").read_text().splitlines()


def play(parser: VenueParser, lines: list[str]) -> list[FrameResult]:
    """Each frame through the venue parser alone, with a result of its own."""
    results = []
    for line in lines:
        out = FrameResult()
        parser.parse(line, out)
        results.append(out)
    return results


@dataclass(frozen=True)
class Send:
    """Send these text frames, one ``send`` each (as fast as the client's reading lets the server)."""

    frames: Sequence[str]


@dataclass(frozen=True)
class Ping:
    """Ping the client; the pong must come within ``timeout_s`` (else the connection is dropped)."""

    timeout_s: float = 5.0


@dataclass(frozen=True)
class Drop:
    """Close the TCP connection without a close frame: the client sees 1006."""


@dataclass(frozen=True)
class Close:
    """Close with a close frame (1001: going away, as a venue restarting its servers)."""

    code: int = 1001
    reason: str = "going away"


@dataclass(frozen=True)
class Hold:
    """Keep the connection open and quiet this long (a connection that lived a while)."""

    seconds: float


@dataclass(frozen=True)
class WaitFor:
    """Wait until the test sets ``event`` (e.g. it has seen the ticks sent so far)."""

    event: asyncio.Event


Step = Send | Ping | Drop | Close | Hold | WaitFor
#: One connection's steps; after the last step the server keeps the connection open until the client closes it.
Script = Sequence[Step]


@dataclass
class Connection:
    """One accepted connection, as the server saw it."""

    path: str
    opened_s: float
    received: list[str] = field(default_factory=list)
    first_message_after_s: float | None = None
    pongs: int = 0
    ended: str = ""
    #: Seconds the server spent in ``send`` calls (grows when the client reads slowly).
    send_s: float = 0.0


class VenueServer:
    """``async with VenueServer([script, ...]) as server:`` then connect to ``server.url``."""

    def __init__(self, scripts: Sequence[Script], *, subscribe_within_s: float | None = None) -> None:
        if not scripts:
            raise ValueError("at least one script")
        self._scripts = list(scripts)
        self._subscribe_within_s = subscribe_within_s
        self._server: Server | None = None
        self.connections: list[Connection] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}"

    async def __aenter__(self) -> Self:
        # No keepalive of the server's own: the scripts ping when they mean to.
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None, compression=None)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        record = Connection(path=ws.request.path if ws.request else "", opened_s=time.monotonic())
        script = self._scripts[min(len(self.connections), len(self._scripts) - 1)]
        self.connections.append(record)
        reader = asyncio.create_task(self._read(ws, record))
        try:
            if self._subscribe_within_s is not None and not await self._subscribed(record):
                record.ended = "closed 1008: no subscribe"
                await ws.close(1008, "no subscribe message in time")
                return
            for step in script:
                if not await self._play(ws, step, record):
                    return
            await ws.wait_closed()
            record.ended = record.ended or f"client closed ({ws.close_code})"
        except ConnectionClosed:
            record.ended = record.ended or f"client closed ({ws.close_code})"
        finally:
            reader.cancel()

    async def _subscribed(self, record: Connection) -> bool:
        assert self._subscribe_within_s is not None
        deadline = record.opened_s + self._subscribe_within_s
        while not record.received:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)  # polls the reader's record, with the venue's deadline
        return True

    async def _play(self, ws: ServerConnection, step: Step, record: Connection) -> bool:
        """Play one step; False when it ended the connection."""
        if isinstance(step, Send):
            started = time.monotonic()
            for frame in step.frames:
                await ws.send(frame)
            record.send_s += time.monotonic() - started
        elif isinstance(step, Ping):
            pong = await ws.ping()
            try:
                await asyncio.wait_for(pong, step.timeout_s)
            except TimeoutError:
                record.ended = "no pong"
                ws.transport.abort()
                return False
            record.pongs += 1
        elif isinstance(step, Drop):
            record.ended = "dropped (no close frame)"
            ws.transport.abort()
            return False
        elif isinstance(step, Close):
            record.ended = f"closed {step.code}"
            await ws.close(step.code, step.reason)
            return False
        elif isinstance(step, Hold):
            await asyncio.sleep(step.seconds)  # the scenario's quiet time, not a wait for a fact
        else:
            await step.event.wait()
        return True

    async def _read(self, ws: ServerConnection, record: Connection) -> None:
        """Record what the client sends (subscribe messages)."""
        try:
            async for message in ws:
                if record.first_message_after_s is None:
                    record.first_message_after_s = time.monotonic() - record.opened_s
                record.received.append(message if isinstance(message, str) else message.decode())
        except ConnectionClosed:
            pass


async def until(
    fact: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 10.0, every_s: float = 0.01
) -> None:
    """Poll ``fact`` every ``every_s`` until it holds; fail with ``what`` after ``timeout_s``
    (a fact that queries a database wants a longer ``every_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = fact()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for: {what}")
        await asyncio.sleep(every_s)


class RecordingObserver:
    """A ``FeedObserver`` that keeps every report, for assertions."""

    def __init__(self) -> None:
        self.connects: list[str] = []
        self.disconnects: list[str] = []
        self.gaps: list[tuple[str, int, int]] = []
        self.bad: list[tuple[str, str]] = []

    async def connected(self, detail: str) -> None:
        self.connects.append(detail)

    async def disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)

    async def gap(self, stream: str, expected: int, received: int) -> None:
        self.gaps.append((stream, expected, received))

    async def malformed(self, reason: str, sample: str) -> None:
        self.bad.append((reason, sample))


class FeedRun:
    """``async with FeedRun(feed) as run:`` starts ``feed`` and collects its batches in a task;
    leaving stops the feed and waits for ``ticks()`` to end (so ``run.ticks`` is then complete).
    ``slow_s`` makes the consumer pause after each batch, as a publisher waiting for Kafka would."""

    def __init__(self, feed: WebSocketFeed, *, slow_s: float = 0.0) -> None:
        self.feed = feed
        self.observer = RecordingObserver()
        self.batches: list[list[Tick]] = []
        self.ticks: list[Tick] = []
        self._slow_s = slow_s
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.feed.start(self.observer)
        self._task = asyncio.create_task(self._consume())
        return self

    async def _consume(self) -> None:
        async for batch in self.feed.ticks():
            self.batches.append(list(batch))
            self.ticks.extend(batch)
            if self._slow_s:
                await asyncio.sleep(self._slow_s)  # the consumer's slowness is the scenario, not a wait for a fact

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.feed.stop()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    async def ticks_at_least(self, count: int, timeout_s: float = 10.0) -> None:
        await until(lambda: len(self.ticks) >= count, f"{count} ticks (have {len(self.ticks)})", timeout_s)
