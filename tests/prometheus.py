"""Helpers for the tests that check metrics the way Prometheus does: promtool
(Debian's ``prometheus`` package, which ``deploy/local/prometheus.sh install``
installs; missing, the test fails and never skips) and free loopback ports for
metrics endpoints."""

from __future__ import annotations

import shutil
import socket
import subprocess

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
