"""Fixtures of the market data service's tests: an app on the suite's own
databases and Redis (``isolated``: this test's quote keys and channels), access
tokens, and the app served in process (through httpx's ASGI transport, or by
uvicorn on loopback for the streams: the ASGI transport holds a response until
it ends)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings
from nexanest.services.market_data.app import build_app
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.tokens import SignedTokens
from tests.services.served import loopback_listener, uvicorn_on

#: Fast enough for tests to see them; the service's defaults are seconds.
TEST_LIMITS = MarketDataLimits(keepalive_s=0.2, stream_send_timeout_s=1.0)


@pytest.fixture(scope="session")
def verifier() -> SignedTokens:
    return SignedTokens(SecretStr("market-data-tests-" + "k" * 32), lifetime_s=3600)


@pytest.fixture
def headers(verifier: SignedTokens) -> dict[str, str]:
    """A valid access token for a new user."""
    return {"Authorization": f"Bearer {verifier.issue(uuid.uuid4())}"}


def symbol_of(test_id: str, suffix: str = "") -> str:
    """A symbol no other test uses (symbols are upper case)."""
    return f"MD{test_id.upper()}{suffix}"


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan, and a client that calls it in process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://market-data.test") as client:
            yield client


@asynccontextmanager
async def served(app: FastAPI, *, send_buffer_bytes: int | None = None) -> AsyncIterator[str]:
    """The app under uvicorn on a free loopback port; yields its base URL.
    ``send_buffer_bytes`` fixes the kernel's send buffer of every connection, so
    that a client that stops reading blocks the server's sends after kilobytes
    rather than megabytes."""
    listener = loopback_listener(send_buffer_bytes=send_buffer_bytes)
    async with uvicorn_on(listener, app):
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def service_settings(isolated: Settings) -> Settings:
    """The suite's settings with this test's quote keys (and so its quote channels)."""
    return isolated


@pytest.fixture
def app(service_settings: Settings, verifier: SignedTokens) -> FastAPI:
    return build_app(service_settings, verifier=verifier, limits=TEST_LIMITS)


@dataclass(frozen=True)
class Event:
    """One server-sent event as a client sees it: ``kind`` is the event's name, or
    ``comment`` for a comment line; ``at`` when its last line arrived (monotonic)."""

    kind: str
    data: str
    at: float


async def events_of(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a ``text/event-stream`` response, as they arrive."""
    kind: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Event("comment", line[1:].strip(), time.monotonic())
        elif line == "":
            if kind is not None or data:
                yield Event(kind or "message", "\n".join(data), time.monotonic())
            kind, data = None, []
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)


async def subscribers(client: redis.Redis, channel: str) -> int:
    """How many connections follow ``channel`` (pub/sub spans every database)."""
    counts = await client.pubsub_numsub(channel)
    return int(counts[0][1])


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = "") -> None:
    """Wait for a fact: ``condition`` true within ``timeout_s``, or fail the test."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.02)
