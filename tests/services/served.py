"""A service as users run it: ``nexanest serve NAME`` in a process of its own, on
a free loopback port, against the suite's own databases (the settings given are
put into its environment, which wins over ``.env``). And an ASGI app under
uvicorn in the test's own event loop (``uvicorn_on``), for what the in-process
ASGI transport cannot do (streams, a webhook receiver reached over HTTP)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from nexanest.pipeline.settings import Settings, namespace_environment

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(
    service: str,
    settings: Settings,
    log: Path,
    *,
    ready_timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Yield the base URL of ``service`` once its ``/readyz`` answers 200; stop it
    (SIGTERM, graceful) afterwards. Fails the test with the service's log when it
    exits or is not ready in time. ``env`` adds ``NEXANEST_*`` settings of its own."""
    port = free_port()
    env = {**os.environ, **namespace_environment(settings), "NEXANEST_LOG__JSON": "true", **(env or {})}
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nexanest.cli.main", "serve", service, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nexanest serve {service} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nexanest serve {service} not ready in {ready_timeout_s:.0f}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loopback_listener(*, send_buffer_bytes: int | None = None) -> socket.socket:
    """A socket bound to a free loopback port, for ``uvicorn_on``. ``send_buffer_bytes``
    fixes the kernel's send buffer of every connection (accepted sockets inherit
    the listener's)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer_bytes is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    listener.bind(("127.0.0.1", 0))
    return listener


@asynccontextmanager
async def uvicorn_on(
    listener: socket.socket, app: Callable[..., Awaitable[None]], **config: object
) -> AsyncIterator[None]:
    """``app`` served by uvicorn on ``listener`` (``config``: more of ``uvicorn.Config``)
    until the block ends; then stopped (in-flight requests finished) and the
    listener closed."""
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, **config))  # type: ignore[arg-type]
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        for _ in range(400):
            if server.started or serving.done():
                break
            await asyncio.sleep(0.025)
        assert server.started, "uvicorn did not start"
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        listener.close()
