"""Helpers for the tests that check metrics the way Prometheus does: promtool
(Debian's ``prometheus`` package, which ``deploy/local/prometheus.sh install``
installs; missing, the test fails and never skips) and free loopback ports for
metrics endpoints, and the local Prometheus' HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def promtool() -> str:
    """The path of promtool; a missing one fails the calling test."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: deploy/local/prometheus.sh install (Debian package prometheus)", pytrace=False
        )
    return found


def check_metrics(exposition: bytes) -> str:
    """``promtool check metrics`` of a scrape: its complaints (empty when it passes)."""
    done = subprocess.run(
        [promtool(), "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False
    )
    complaints = (done.stdout + done.stderr).decode().strip()
    assert done.returncode == 0 or complaints, "promtool failed without a word"
    return "" if done.returncode == 0 else complaints


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nothing listens on (at the time of the call)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_targets(path: Path, entries: list[dict[str, Any]]) -> None:
    """A file_sd file written whole (temporary file, then rename): Prometheus watches
    the directory and would otherwise read it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(entries))
    tmp.replace(path)


#: The stack's Prometheus (deploy/local/prometheus.sh).
PROMETHEUS = "http://127.0.0.1:9090"


def api_body(path: str, **query: str) -> Any:
    """The JSON body of ``GET /api/v1/<path>``, errors included (400: an expression
    that does not parse answers ``status: error`` with the reason)."""
    url = f"{PROMETHEUS}/api/v1/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - an http:// URL of ours
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def wait_until(what: str, fact: Any, timeout_s: float = 90.0) -> Any:
    """Poll ``fact()`` until it returns something truthy; fail after ``timeout_s`` saying ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = fact()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f} s (last: {found!r})", pytrace=False)
        time.sleep(0.5)
