"""Fixtures of the market data service's tests: an app on the suite's own
databases and Redis (``isolated``: this test's quote keys and channels), access
tokens, and the app served in process (through httpx's ASGI transport, or by
uvicorn on loopback for the streams: the ASGI transport holds a response until
it ends)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from nexanest.pipeline.settings import Settings
from nexanest.services.market_data.app import build_app
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.tokens import SignedTokens

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
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app under uvicorn on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.025)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


@pytest.fixture
def service_settings(isolated: Settings) -> Settings:
    """The suite's settings with this test's quote keys (and so its quote channels)."""
    return isolated


@pytest.fixture
def app(service_settings: Settings, verifier: SignedTokens) -> FastAPI:
    return build_app(service_settings, verifier=verifier, limits=TEST_LIMITS)
