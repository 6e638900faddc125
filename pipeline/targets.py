"""A running process announces its ``/metrics`` endpoint to Prometheus.

Prometheus' file service discovery reads every ``*.json`` of a directory; each
process that serves metrics writes one file there while it runs, so Prometheus
scrapes exactly what runs and shows nothing for a process that was never
started. ``deploy/local/prometheus.sh`` points two jobs at the directory named by
``NEXANEST_METRICS__TARGETS_DIR``: job ``nexanest`` at its ``*.json`` (the
pipeline's processes) and job ``services`` at ``services/*.json`` (the HTTP
services). The file is ``<component>-<port>.json``, so a restart on the same
port replaces it, and two processes on different ports never share one.

A clean exit (the command returns, SIGTERM or Ctrl-C included) withdraws the
file. A process killed with SIGKILL cannot: its file stays, and its target shows
down, which is what the consumer-down alert is for.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Final, Literal

from nexanest.pipeline.log import get_logger

_log = get_logger(__name__)

#: The subdirectory the HTTP services announce into (job ``services``).
SERVICES_SUBDIR: Final = "services"
Job = Literal["nexanest", "services"]

#: The files this process has announced and not withdrawn yet (for ``withdraw_all``).
_announced: set[Path] = set()
_lock = threading.Lock()


def scrape_address(host: str, port: int) -> str:
    """``HOST:PORT`` as Prometheus on this machine reaches a server bound to ``host``:
    a wildcard bind (``0.0.0.0``, ``::``, empty) is reached on loopback; an IPv6
    literal is bracketed."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a bind address read, not one bound
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def announce(targets_dir: str, component: str, host: str, port: int, *, job: Job = "nexanest") -> Path | None:
    """Write ``<targets_dir>[/services]/<component>-<port>.json`` (file_sd: one target
    with label ``component``), atomically: Prometheus never reads half a file.

    Returns the file's path, or None when ``targets_dir`` is empty or ``port`` is
    0 (nothing to announce). Never raises for the file system: an announcement
    Prometheus cannot read costs only the scrape, so a failure is logged as a
    warning and the process runs on unannounced.
    """
    if not targets_dir or not port:
        return None
    directory = Path(targets_dir) / SERVICES_SUBDIR if job == "services" else Path(targets_dir)
    path = directory / f"{component}-{port}.json"
    entry = [{"targets": [scrape_address(host, port)], "labels": {"component": component}}]
    # A dot name and no .json ending: the glob *.json never matches a half-written file.
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)  # Prometheus may run as another user (root's stack: `prometheus`)
        tmp.write_text(json.dumps(entry) + "\n")
        tmp.chmod(0o644)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        _log.warning("metrics_target_not_announced", path=str(path), error=str(exc))
        return None
    with _lock:
        _announced.add(path)
    _log.info("metrics_target_announced", path=str(path), job=job, component=component, port=port)
    return path


def withdraw(path: Path | None) -> None:
    """Remove an announcement (None: there was none). Safe to call twice; never raises."""
    if path is None:
        return
    with _lock:
        _announced.discard(path)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        _log.warning("metrics_target_not_withdrawn", path=str(path), error=str(exc))


def withdraw_all() -> None:
    """Withdraw every announcement of this process: for an exit that skips the
    normal path (``os._exit`` after a second Ctrl-C)."""
    with _lock:
        paths = list(_announced)
    for path in paths:
        withdraw(path)
