"""A service as users run it: ``nexanest serve NAME`` in a process of its own, on
a free loopback port, against the suite's own databases (the settings given are
put into its environment, which wins over ``.env``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

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
