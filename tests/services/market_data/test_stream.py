"""GET /stream/quotes under uvicorn on loopback, fed by the consumer's quote sink
through the real Redis (integration): snapshot then updates in order, keep-alive
comments, unsubscribing on disconnect, a slow client dropped with bounded memory
while a fast one on the same symbols misses nothing, the end of a stream whose
token is revoked, and the bounds."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI
from pydantic import ValidationError

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink, quote_channel
from nexanest.schemas.ticks import Tick
from nexanest.services.market_data.app import build_app
from nexanest.services.market_data.hub import QuoteHub, Subscription
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.market_data.stream import quote_events
from nexanest.services.sessions import session_store
from nexanest.services.tokens import SignedTokens
from tests.services.market_data.conftest import TEST_LIMITS, Event, events_of, served, subscribers, symbol_of, until

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000_000_000


def tick(symbol: str, price: int, ts_ns: int, seq: int) -> Tick:
    return Tick(symbol=symbol, exchange="XNAS", price_e9=price * 10**9, size_e9=10**9, ts_ns=ts_ns, source="s", seq=seq)


def hub_of(app: FastAPI) -> QuoteHub:
    return next(v for v in app.state.resources.values() if isinstance(v, QuoteHub))


async def next_event(events: AsyncIterator[Event], kind: str = "quote", timeout_s: float = 5.0) -> Event:
    """The next event of ``kind``, skipping the others (comments, keep-alives)."""

    async def find() -> Event:
        async for event in events:
            if event.kind == kind:
                return event
        pytest.fail(f"the stream ended before a {kind} event")

    return await asyncio.wait_for(find(), timeout_s)


@pytest.fixture
def sink(quotes_redis: redis.Redis, service_settings: Settings) -> RedisQuoteSink:
    return RedisQuoteSink(quotes_redis, service_settings.redis.quote_key_prefix)


async def put(sink: RedisQuoteSink, *ticks: Tick) -> None:
    sink.write(ticks)
    await sink.flush()


async def test_a_stream_starts_with_the_snapshot_then_follows_updates_in_order(
    app: FastAPI, sink: RedisQuoteSink, headers: dict[str, str], test_id: str
) -> None:
    a, b = symbol_of(test_id, "A"), symbol_of(test_id, "B")
    await put(sink, tick(a, 10, T0, 1))
    async with (
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("GET", f"/stream/quotes?symbols={a},{b}", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = events_of(response)
        assert (await next_event(events, "comment")).data == "following 2 symbols"
        snapshot = json.loads((await next_event(events)).data)
        assert (snapshot["symbol"], snapshot["price"], snapshot["ts_ns"]) == (a, "10", T0)
        await put(sink, tick(b, 5, T0, 1))
        assert json.loads((await next_event(events)).data)["price"] == "5"
        await put(sink, tick(a, 9, T0 - 1, 7))  # older than the quote: not published, not sent
        await put(sink, tick(a, 11, T0 + 1, 2))
        update = json.loads((await next_event(events)).data)
        assert (update["symbol"], update["price"], update["seq"]) == (a, "11", 2)


async def test_keep_alive_comments_come_at_the_configured_interval(
    app: FastAPI, headers: dict[str, str], test_id: str
) -> None:
    path = f"/stream/quotes?symbols={symbol_of(test_id)}"
    async with (
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        opened = time.monotonic()
        beats: list[float] = []
        async for event in events_of(response):
            if event.kind == "comment" and event.data == "keep-alive":
                beats.append(event.at)
                if len(beats) == 5:
                    break
    gaps = [later - earlier for earlier, later in zip([opened, *beats], beats, strict=False)]
    assert max(gaps) < TEST_LIMITS.keepalive_s + 0.25, gaps
    # In production at least every 15 s: the setting cannot be made longer.
    assert MarketDataLimits().keepalive_s == 15.0
    with pytest.raises(ValidationError):
        MarketDataLimits(keepalive_s=16)


async def test_a_client_that_disconnects_is_unsubscribed(
    app: FastAPI, quotes_redis: redis.Redis, service_settings: Settings, headers: dict[str, str], test_id: str
) -> None:
    symbol = symbol_of(test_id)
    channel = quote_channel(service_settings.redis.quote_key_prefix, symbol)
    async with served(app) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as http,
            http.stream("GET", f"/stream/quotes?symbols={symbol}", headers=headers) as response,
        ):
            events = events_of(response)  # held: a dropped generator closes the response
            await next_event(events, "comment")
            assert await subscribers(quotes_redis, channel) == 1
            assert hub_of(app).streams == 1
        # The client is gone (connection closed): the hub lets go of the channel.
        await until(lambda: _none_follow(quotes_redis, channel), what="the channel unsubscribed")
        assert hub_of(app).streams == 0


async def _none_follow(client: redis.Redis, channel: str) -> bool:
    return await subscribers(client, channel) == 0


async def test_a_client_that_never_reads_is_dropped_with_bounded_memory_and_a_fast_one_misses_nothing(
    service_settings: Settings, verifier: SignedTokens, sink: RedisQuoteSink, test_id: str
) -> None:
    limits = MarketDataLimits(keepalive_s=0.2, stream_send_timeout_s=1.0, max_stream_symbols=100, stream_queue=256)
    app = build_app(service_settings, verifier=verifier, limits=limits)
    token = verifier.issue(uuid.uuid4())
    symbols = [symbol_of(test_id, f"S{i}") for i in range(100)]
    path = f"/stream/quotes?symbols={','.join(symbols)}"
    rounds = 80  # 8,000 updates, about 2.5 MB of events for each client
    async with served(app, send_buffer_bytes=8192) as url:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        loop = asyncio.get_running_loop()
        # The slow client: a small receive window, the request sent, nothing read.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        await loop.sock_connect(slow, (host, port))
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        await loop.sock_sendall(slow, request.encode())
        received: dict[str, int] = {}

        async def read_fast(http: httpx.AsyncClient, ready: asyncio.Event) -> None:
            async with http.stream("GET", path, headers={"Authorization": f"Bearer {token}"}) as response:
                async for event in events_of(response):
                    if event.kind == "comment" and event.data.startswith("following"):
                        ready.set()
                    elif event.kind == "quote":
                        quote = json.loads(event.data)
                        received[quote["symbol"]] = received.get(quote["symbol"], 0) + 1
                        if sum(received.values()) == rounds * len(symbols):
                            return

        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            ready = asyncio.Event()
            fast = asyncio.create_task(read_fast(http, ready))
            await asyncio.wait_for(ready.wait(), 10)
            await until(lambda: _streams(app, 2), what="both streams following")
            for n in range(rounds):
                await put(sink, *(tick(s, 100 + n, T0 + n, n) for s in symbols))
            await asyncio.wait_for(fast, 30)
        assert received == dict.fromkeys(symbols, rounds)  # every update, in spite of the slow one
        hub = hub_of(app)
        await until(lambda: _dropped(hub), what="the slow client dropped")
        assert hub.most_queued <= limits.stream_queue
        # What the server ever put on the slow client's connection: read it all, to the
        # server's close (after the send timeout). Bounded by the buffers, not the flood.
        taken = 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(loop.sock_recv(slow, 65536), deadline - time.monotonic())
            if not chunk:
                break
            taken += len(chunk)
        else:
            pytest.fail("the server did not close the slow client's connection")
        slow.close()
    published = rounds * len(symbols) * 300  # an event is over 300 bytes
    print(f"slow client: {taken:,} bytes reached it of {published:,}+ published; most queued {hub.most_queued}")
    assert taken < 300_000 < published
    assert hub.streams == 0


async def _streams(app: FastAPI, count: int) -> bool:
    return hub_of(app).streams == count


async def _dropped(hub: QuoteHub) -> bool:
    return hub.dropped_total == 1 and hub.streams == 1


async def test_a_dropped_stream_ends_with_an_end_event() -> None:
    subscription = Subscription(frozenset({b"x"}), queue_size=1)
    subscription._drop()

    async def accepted() -> bool:
        return True

    events = [e async for e in quote_events(subscription, [], {}, accepted, reverify_s=60)]
    assert [type(e).__name__ for e in events] == ["ServerSentEvent", "ServerSentEvent"]
    assert events[-1].encode() == b'event: end\r\ndata: {"reason":"dropped"}\r\n\r\n'  # type: ignore[union-attr]


async def test_a_stream_ends_when_its_session_is_revoked(service_settings: Settings, test_id: str) -> None:
    """The auth service's sessions (``build_app`` without a verifier): a logout
    ends an open stream within ``stream_reverify_s``, not only new requests."""
    limits = MarketDataLimits(keepalive_s=0.2, stream_reverify_s=0.2)
    app = build_app(service_settings, limits=limits)
    sessions, resource = session_store(service_settings)
    async with resource.open():
        token = (await sessions.create(uuid.uuid4(), "user")).token
        headers = {"Authorization": f"Bearer {token}"}
        path = f"/stream/quotes?symbols={symbol_of(test_id)}"
        async with (
            served(app) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as http,
            http.stream("GET", path, headers=headers) as response,
        ):
            events = events_of(response)
            await next_event(events, "comment")
            await asyncio.sleep(0.5)  # verified again meanwhile, still accepted
            assert await sessions.revoke(token)
            end = await next_event(events, "end")
            assert json.loads(end.data) == {"reason": "token"}
            assert [e async for e in events if e.kind != "comment"] == []  # and the stream is over
            assert (await http.get(path, headers=headers)).status_code == 401


async def test_streams_are_bounded_and_checked(
    service_settings: Settings, verifier: SignedTokens, headers: dict[str, str], test_id: str
) -> None:
    app = build_app(service_settings, verifier=verifier, limits=TEST_LIMITS.model_copy(update={"max_streams": 1}))
    too_many = ",".join(symbol_of(test_id, f"S{i}") for i in range(TEST_LIMITS.max_stream_symbols + 1))
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        answers: dict[str, Any] = {
            "no token": await http.get(f"/stream/quotes?symbols={symbol_of(test_id)}"),
            "bad symbol": await http.get("/stream/quotes?symbols=ok,not ok", headers=headers),
            "too many symbols": await http.get(f"/stream/quotes?symbols={too_many}", headers=headers),
            "no symbols": await http.get("/stream/quotes", headers=headers),
        }
        async with http.stream("GET", f"/stream/quotes?symbols={symbol_of(test_id)}", headers=headers) as first:
            events = events_of(first)
            await next_event(events, "comment")
            answers["one stream too many"] = await http.get(
                f"/stream/quotes?symbols={symbol_of(test_id)}", headers=headers
            )
    assert {name: r.status_code for name, r in answers.items()} == {
        "no token": 401,
        "bad symbol": 422,
        "too many symbols": 422,
        "no symbols": 422,
        "one stream too many": 503,
    }
    assert answers["one stream too many"].headers["retry-after"] == "5"
    assert answers["one stream too many"].headers["content-type"] == "application/problem+json"


async def test_a_stream_survives_the_loss_of_the_hubs_redis_connection(
    app: FastAPI, sink: RedisQuoteSink, quotes_redis: redis.Redis, headers: dict[str, str], test_id: str
) -> None:
    """Redis drops the hub's connection (as it does a subscriber over its output
    buffer limit); the hub reconnects and subscribes again, and the stream goes on.
    Only the hub's own connection is killed (by its client name): the Redis is shared."""
    symbol = symbol_of(test_id)
    async with (
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("GET", f"/stream/quotes?symbols={symbol}", headers=headers) as response,
    ):
        events = events_of(response)
        await next_event(events, "comment")
        hub = hub_of(app)
        clients = await quotes_redis.client_list(_type="pubsub")
        ids = [c["id"] for c in clients if c.get("name") == hub.client_name]
        assert len(ids) == 1
        assert await quotes_redis.client_kill_filter(_id=ids[0]) == 1
        # Updates published while it reconnects are lost: publish newer ones until one comes.
        arrived: list[Event] = []

        async def read_one() -> None:
            arrived.append(await next_event(events, timeout_s=15))

        reading = asyncio.create_task(read_one())
        seq = 0
        while not reading.done() and seq < 150:
            seq += 1
            await put(sink, tick(symbol, 100 + seq, T0 + seq, seq))
            await asyncio.wait({reading}, timeout=0.1)
        await reading
        assert json.loads(arrived[0].data)["symbol"] == symbol
        await until(lambda: _ready(http), what="the hub reported ready again")


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_an_unreadable_update_is_skipped_and_the_stream_goes_on(
    app: FastAPI,
    sink: RedisQuoteSink,
    quotes_redis: redis.Redis,
    service_settings: Settings,
    headers: dict[str, str],
    test_id: str,
) -> None:
    symbol = symbol_of(test_id)
    channel = quote_channel(service_settings.redis.quote_key_prefix, symbol)
    async with (
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("GET", f"/stream/quotes?symbols={symbol}", headers=headers) as response,
    ):
        events = events_of(response)
        await next_event(events, "comment")
        # Someone else's message on the channel: too few fields, then a price that is no decimal.
        assert await quotes_redis.publish(channel, b"not a quote") == 1
        assert await quotes_redis.publish(channel, b"1 2 1e5 1 2 3 4 XNAS") == 1
        await put(sink, tick(symbol, 12, T0, 3))
        update = json.loads((await next_event(events)).data)
        assert (update["price"], update["seq"]) == ("12", 3)
        assert (await http.get("/readyz")).status_code == 200
