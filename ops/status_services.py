"""``nexanest status``: whether each service of the stack answers, and its version.

Each probe is one read-only question with a timeout: PostgreSQL (``SHOW
server_version``), TimescaleDB (server version, the extension's version and
``timescaledb.license``), Redis (``INFO server``), Kafka (broker count; its
protocol does not tell a client the broker's release), Prometheus
(``/api/v1/status/buildinfo``), Alertmanager (``/api/v2/status``: version and
cluster state), the HTTP services (``GET /healthz``, then ``/readyz``). A probe
never raises: a service that fails or stays silent is reported down, with the
kind of error (never a DSN).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as redis
from aiokafka.admin import AIOKafkaAdminClient

from nexanest.pipeline.kafka import make_admin, start_client
from nexanest.pipeline.settings import Settings

#: Default timeout of each probe, in seconds.
DEFAULT_TIMEOUT_S: Final = 3.0


@dataclass
class ServiceStatus:
    name: str
    port: int | None
    up: bool
    required: bool
    version: str | None = None
    #: What else is worth a glance (TimescaleDB's edition, Kafka's brokers, ...).
    detail: str | None = None
    #: Why it is down (an error class and message, never a DSN).
    error: str | None = None


def service_probes(settings: Settings, timeout_s: float, require_services: bool) -> list[Awaitable[ServiceStatus]]:
    """One probe per service: the four stores (required), Prometheus and
    Alertmanager when configured (required then), the HTTP services (required
    only with ``require_services``)."""
    probes: list[Awaitable[ServiceStatus]] = [
        _probe(
            "postgresql",
            _port_of(settings.postgres.auth_dsn.get_secret_value(), 5432),
            True,
            timeout_s,
            lambda: _postgres(settings),
        ),
        _probe(
            "timescaledb",
            _port_of(settings.timescale.dsn.get_secret_value(), 5433),
            True,
            timeout_s,
            lambda: _timescale(settings),
        ),
        _probe(
            "redis", _port_of(settings.redis.url.get_secret_value(), 6379), True, timeout_s, lambda: _redis(settings)
        ),
        _probe(
            "kafka",
            _port_of("kafka://" + settings.kafka.bootstrap_servers.split(",")[0], 9092),
            True,
            timeout_s,
            lambda: _kafka(settings, timeout_s),
        ),
    ]
    if settings.prometheus_url:
        url = settings.prometheus_url.rstrip("/")
        probes.append(_probe("prometheus", _port_of(url, 9090), True, timeout_s, lambda: _prometheus(url)))
    if settings.alertmanager_url:
        am_url = settings.alertmanager_url.rstrip("/")
        probes.append(_probe("alertmanager", _port_of(am_url, 9095), True, timeout_s, lambda: _alertmanager(am_url)))
    sv = settings.services
    for name, port in sv.ports().items():
        probes.append(_probe(name, port, require_services, timeout_s, _bind_http(sv.host, port)))
    return probes


async def _probe(
    name: str,
    port: int | None,
    required: bool,
    timeout_s: float,
    check: Callable[[], Awaitable[tuple[str | None, str | None]]],
) -> ServiceStatus:
    try:
        version, detail = await asyncio.wait_for(check(), timeout_s)
    except TimeoutError:
        return ServiceStatus(name, port, False, required, error=f"no answer within {timeout_s:g} s")
    except Exception as exc:  # noqa: BLE001 - any failure means down; report its kind
        return ServiceStatus(name, port, False, required, error=describe_error(exc))
    return ServiceStatus(name, port, True, required, version=version, detail=detail)


def describe_error(exc: BaseException) -> str:
    """Why a probe failed, in one short line: the error's class and the first line of its message."""
    # asyncpg's and redis's messages name hosts and ports, never passwords; keep them short.
    message = str(exc).splitlines()[0][:160] if str(exc) else ""
    kind = type(exc).__name__
    message = message.removeprefix(f"{kind}: ")
    return f"{kind}: {message}" if message else kind


async def read_only_connection(dsn: str) -> asyncpg.Connection:
    """A connection whose transactions are read-only: status never writes."""
    return await asyncpg.connect(
        dsn, timeout=DEFAULT_TIMEOUT_S, server_settings={"default_transaction_read_only": "on"}
    )


async def _postgres(settings: Settings) -> tuple[str | None, str | None]:
    conn = await read_only_connection(settings.postgres.auth_dsn.get_secret_value())
    try:
        return str(await conn.fetchval("SHOW server_version")).split()[0], None
    finally:
        await conn.close()


async def _timescale(settings: Settings) -> tuple[str | None, str | None]:
    conn = await read_only_connection(settings.timescale.dsn.get_secret_value())
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('server_version') AS pg,"
            " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS ts,"
            " current_setting('timescaledb.license', true) AS license"
        )
    finally:
        await conn.close()
    if row is None:
        raise RuntimeError("no row")
    return f"{row['ts']} (PostgreSQL {str(row['pg']).split()[0]})", f"license {row['license'] or 'none'}"


async def _redis(settings: Settings) -> tuple[str | None, str | None]:
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return str(info.get("redis_version")), None


async def _kafka(settings: Settings, timeout_s: float) -> tuple[str | None, str | None]:
    """Kafka's protocol does not tell a client the broker's release: the version
    stays empty, the detail counts the brokers of the cluster."""
    admin = status_admin(settings, timeout_s)
    try:
        await start_client(admin, settings.kafka)
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    return None, f"{len(cluster['brokers'])} broker(s), cluster {cluster.get('cluster_id')}"


async def _prometheus(url: str) -> tuple[str | None, str | None]:
    status, body = await http_get(url + "/api/v1/status/buildinfo")
    if status != 200:
        raise ConnectionError(f"HTTP {status}")
    return str(json.loads(body)["data"]["version"]), None


async def _alertmanager(url: str) -> tuple[str | None, str | None]:
    status, body = await http_get(url + "/api/v2/status")
    if status != 200:
        raise ConnectionError(f"HTTP {status}")
    state = json.loads(body)
    return str(state["versionInfo"]["version"]), f"cluster {state['cluster']['status']}"


def _bind_http(host: str, port: int) -> Callable[[], Awaitable[tuple[str | None, str | None]]]:
    async def check() -> tuple[str | None, str | None]:
        status, _ = await http_get(f"http://{host}:{port}/healthz")
        if status != 200:
            status, _ = await http_get(f"http://{host}:{port}/readyz")
        if status != 200:
            raise ConnectionError(f"HTTP {status} from /healthz and /readyz")
        return None, "healthz 200"

    return check


async def http_get(url: str) -> tuple[int, bytes]:
    """One HTTP/1.0 GET (no keep-alive, no TLS): the status and the body."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {parts.path or '/'} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read(1 << 20)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def status_admin(settings: Settings, timeout_s: float) -> AIOKafkaAdminClient:
    """A Kafka admin client (not started) whose requests give up after ``timeout_s``."""
    return make_admin(settings.kafka, client_suffix="status", request_timeout_ms=max(1000, int(timeout_s * 1000)))


def _port_of(url: str, default: int) -> int:
    try:
        return urlsplit(url).port or default
    except ValueError:
        return default
