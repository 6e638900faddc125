"""``GET /stream/quotes?symbols=A,B``: live quote updates as server-sent events.

What a client receives (``text/event-stream``):

* a comment naming how many symbols it follows, with ``retry:`` (how long a
  browser's EventSource waits before reconnecting);
* ``event: quote`` for each of those symbols that has a quote now (the
  snapshot), then one ``event: quote`` for every update the consumer publishes,
  in order per symbol, never an older one after a newer; ``data`` is the JSON of
  a ``Quote`` (``models.py``), the same as ``GET /quotes/{symbol}`` answers;
* a ``: keep-alive`` comment every ``keepalive_s`` (15 s at most);
* ``event: end`` with ``{"reason": ...}`` when the service ends the stream:
  ``dropped`` (the client fell more than ``stream_queue`` updates behind: its
  backlog was discarded; reconnecting starts again from a fresh snapshot) or
  ``token`` (its access token is no longer accepted: checked every
  ``stream_reverify_s``).

A client that stops reading altogether is dropped when a send waits longer
than ``stream_send_timeout_s``; its connection is then closed without ``end``.
A client that disconnects is unsubscribed at once (``QuoteHub.unsubscribe``).

No ``from __future__ import annotations``: the router closes over its
resources (see ``Resource`` in services/app.py).
"""

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Final

import anyio
import redis.asyncio as redis
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.sinks.redis_quotes import RETRYABLE_REDIS_ERRORS
from nexanest.services.app import Resource
from nexanest.services.market_data.hub import QuoteHub, StreamUpdate, Subscription, render_event
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.market_data.quotes import read_quotes
from nexanest.services.market_data.symbols import InvalidSymbols, parse_symbol_list
from nexanest.services.problems import problem_responses
from nexanest.services.tokens import BearerAuth, InvalidToken, TokenVerifier

_log = get_logger("nexanest.services.market_data.stream")

#: What a browser's EventSource waits before reconnecting, in milliseconds.
RECONNECT_MS: Final = 2_000
_UNAVAILABLE: Final = "the quote stream is unavailable; try again shortly"
#: Most updates sent in one write (about 400 bytes each).
_MOST_PER_WRITE: Final = 256


def _end(reason: str) -> ServerSentEvent:
    return ServerSentEvent(data=f'{{"reason":"{reason}"}}', event="end")


async def quote_events(
    subscription: Subscription,
    snapshot: list[bytes],
    last_sent: dict[str, tuple[int, int]],
    still_accepted: Callable[[], Awaitable[bool]],
    reverify_s: float,
) -> AsyncIterator[bytes | ServerSentEvent]:
    """The events of one stream: the snapshot, then updates newer than what was
    sent (``last_sent``: the (ts_ns, seq) sent per symbol), until the hub drops
    the subscription or ``still_accepted`` says no."""
    yield ServerSentEvent(comment=f"following {len(subscription.channels)} symbols", retry=RECONNECT_MS)
    if snapshot:
        yield b"".join(snapshot)
    next_check = time.monotonic() + reverify_s
    while True:
        ready: list[StreamUpdate | None] = []
        with anyio.move_on_after(max(0.0, next_check - time.monotonic())):
            ready.append(await subscription.get())
        if time.monotonic() >= next_check:
            if not await still_accepted():
                yield _end("token")
                return
            next_check = time.monotonic() + reverify_s
        if not ready:
            continue
        # Whatever else is waiting goes out in the same write: a consumer batch
        # publishes many symbols at once, and one send per event would cost a
        # write, a chunk and a wake-up of the client each.
        ready += subscription.take_waiting(_MOST_PER_WRITE)
        fresh = []
        for update in ready:
            if update is None:
                break
            if (update.ts_ns, update.seq) > last_sent.get(update.symbol, (-1, -1)):  # else the snapshot held it
                last_sent[update.symbol] = (update.ts_ns, update.seq)
                fresh.append(update.event)
        if fresh:
            yield b"".join(fresh)
        if ready[-1] is None:
            yield _end("dropped")
            return


class QuoteStreamResponse(EventSourceResponse):
    """An event stream that releases its subscription however it ends (a
    finished generator, a disconnect, a send timeout, a stream that never
    started), and reports a send timeout as a dropped client rather than an error."""

    media_type = "text/event-stream"

    def __init__(
        self, content: AsyncIterator[bytes | ServerSentEvent], *, release: Callable[[], None], **options: object
    ) -> None:
        super().__init__(content, **options)  # type: ignore[arg-type]
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # The socket took nothing for send_timeout: the server closes the connection.
            _log.warning("stream_dropped", reason="send_timeout")
        finally:
            self._release()


def stream_router(
    hub_resource: Resource[QuoteHub],
    redis_quotes: Resource[redis.Redis],
    *,
    key_prefix: str,
    symbol_rule: re.Pattern[str],
    verifier: TokenVerifier,
    limits: MarketDataLimits,
) -> APIRouter:
    """``GET /stream/quotes``."""
    router = APIRouter(tags=["stream"], responses=problem_responses(401, 422, 503))
    current_user = BearerAuth(verifier)

    @router.get(
        "/stream/quotes",
        response_class=QuoteStreamResponse,
        status_code=200,
        dependencies=[Depends(current_user)],
        responses={
            200: {
                "description": "Server-sent events: `quote` (data: a Quote), `end` (data: {reason}), comments",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
        },
    )
    async def stream_quotes(
        request: Request,
        hub: Annotated[QuoteHub, Depends(hub_resource.get)],
        client: Annotated[redis.Redis, Depends(redis_quotes.get)],
        symbols: Annotated[
            str,
            Query(
                min_length=1,
                max_length=limits.max_stream_symbols * 33,
                description=f"Comma-separated symbols to follow, at most {limits.max_stream_symbols}.",
            ),
        ],
    ) -> QuoteStreamResponse:
        """Follow the quotes of ``symbols`` as they change (see the module's
        description of the events). The stream starts with their current quotes."""
        try:
            wanted = parse_symbol_list(symbols, symbol_rule, limits.max_stream_symbols)
        except InvalidSymbols as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
        if hub.streams >= limits.max_streams:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="this service follows as many streams as it may; try again shortly",
                headers={"Retry-After": "5"},
            )
        try:
            subscription = await hub.subscribe(wanted)
        except (TimeoutError, *RETRYABLE_REDIS_ERRORS) as exc:
            _log.warning("stream_refused", reason=type(exc).__name__)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=_UNAVAILABLE) from None
        try:
            # After the subscription is confirmed: no update falls between the two.
            current = await read_quotes(client, key_prefix, wanted)
        except RETRYABLE_REDIS_ERRORS as exc:
            hub.unsubscribe(subscription)
            _log.warning("stream_refused", reason=type(exc).__name__)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=_UNAVAILABLE) from None
        token = request.headers.get("authorization", "").partition(" ")[2].strip()

        async def still_accepted() -> bool:
            try:
                await verifier.verify(token)
            except InvalidToken:
                return False
            except Exception as exc:  # noqa: BLE001 - a verifier that cannot answer ends no stream
                _log.warning("stream_reverify_failed", error=type(exc).__name__)
            return True

        events = quote_events(
            subscription,
            [render_event(current[s]) for s in wanted if s in current],
            {s: (q.ts_ns, q.seq) for s, q in current.items()},
            still_accepted,
            limits.stream_reverify_s,
        )
        return QuoteStreamResponse(
            events,
            release=lambda: hub.unsubscribe(subscription),
            ping=limits.keepalive_s,
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
            send_timeout=limits.stream_send_timeout_s,
        )

    return router
