"""Fixtures for any service's tests: a service app running in process.

``serve(app)`` runs the app's lifespan (its pools and clients open, as under a
server) and gives an httpx client on it through the ASGI transport, plus the
app's own opened resources, so that a test can query with the very pool the
routes use (as the service's role, with its rights). Everything is closed at
the end of the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from nexanest.services.app import Resource


class Served:
    """An app whose lifespan runs, and the clients made on it."""

    def __init__(self, app: FastAPI, stack: AsyncExitStack) -> None:
        self.app = app
        self._stack = stack
        self.http = self.client()

    def client(self, address: str = "127.0.0.1") -> httpx.AsyncClient:
        """Another client of the app, whose requests come from ``address``
        (what ``request.client.host`` says). Unhandled errors reach the test
        as the 500 a client would get."""
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False, client=(address, 50_000))
        http = httpx.AsyncClient(transport=transport, base_url="http://service.test")
        self._stack.push_async_callback(http.aclose)
        return http

    def resource(self, name: str) -> Any:
        """The opened value of the app's resource ``name`` (its pool, its Redis client)."""
        opened: dict[Resource[Any], object] = self.app.state.resources
        for resource, value in opened.items():
            if resource.name == name:
                return value
        raise KeyError(f"the app has no open resource {name!r}: {[r.name for r in opened]}")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[FastAPI], Awaitable[Served]]]:
    """``served = await serve(app)``: ``app`` running until the test ends."""
    async with AsyncExitStack() as stack:

        async def start(app: FastAPI) -> Served:
            await stack.enter_async_context(app.router.lifespan_context(app))
            return Served(app, stack)

        yield start
