"""``nexanest status``: one read-only report on the whole local stack.

Every probe runs concurrently with a short timeout (``timeout_s``), and none of
them writes anything: the databases are read with plain SELECTs, Kafka through
an admin client and a consumer without a group (no join, no commit), the HTTP
services and Prometheus with one GET each, the backups by listing a folder.

What is reported, and where it comes from:

- services: PostgreSQL (``SHOW server_version``), TimescaleDB (server version,
  the extension's version and ``timescaledb.license``), Redis (``INFO server``),
  Kafka (broker count and the API version it negotiates), Prometheus
  (``/api/v1/status/buildinfo``; only when ``prometheus_url`` is set),
  Alertmanager (``/api/v2/status``: version and cluster state; only when
  ``alertmanager_url`` is set), the HTTP services (``GET /healthz``, then
  ``/readyz``).
- lag of the consumer group per partition, in messages: the topic's end offset
  minus how far the group has consumed, the larger of the offset stored in
  TimescaleDB ``ingest_offsets`` (the exactly-once consumer's own record, written
  in the same transaction as the rows) and the one committed to Kafka (the
  at-least-once consumer's); in seconds: 0 when the partition is drained, else
  now minus the newest stored tick of that ``kafka_partition`` in the last
  ``LAG_WINDOW_S`` (``stock_prices`` has no topic column: it is the newest tick
  of that partition number from any topic written there).
- ticks/s: rows of ``stock_prices`` with ``time`` in the last 60 s, over 60;
  the age of the newest tick (looked for in the last ``LAG_WINDOW_S``);
- DLQ size: end minus beginning offsets of the dead-letter topic;
- last backup: the newest complete folder (``<UTC time>`` with a ``MANIFEST``;
  ``.partial`` ones are not) under ``backup_dir``, with its time.

``required`` services decide the exit status: the four stores, plus Prometheus
and Alertmanager when they are configured (an alert rule that fires into a
dead Alertmanager reaches nobody). The HTTP services are reported but optional, since they
are started on their own (``nexanest serve``); ``require_services`` makes them
required as well.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from nexanest.pipeline.kafka import consumer_options, make_admin, start_client
from nexanest.pipeline.settings import Settings

#: Default timeout of each probe, in seconds.
DEFAULT_TIMEOUT_S: Final = 3.0
#: How far back the tick queries look: they stay bounded on a large table.
LAG_WINDOW_S: Final = 3600
#: The window ticks/s is measured over.
RATE_WINDOW_S: Final = 60

T = TypeVar("T")

_BACKUP_NAME: Final = re.compile(r"^(\d{8}T\d{6}Z)(-\d+)?$")

_NEWEST_BY_PARTITION: Final = f"""
SELECT kafka_partition, max(time) AS newest FROM stock_prices
 WHERE time > now() - interval '{LAG_WINDOW_S} seconds' AND time <= now() AND kafka_partition = ANY($1::int[])
 GROUP BY kafka_partition
"""
_RATE: Final = f"""
SELECT count(*) AS n, (SELECT max(time) FROM stock_prices
         WHERE time > now() - interval '{LAG_WINDOW_S} seconds' AND time <= now())
       AS newest, now() AS now
  FROM stock_prices WHERE time > now() - interval '{RATE_WINDOW_S} seconds' AND time <= now()
"""
_STORED_OFFSETS: Final = """
SELECT partition, next_offset FROM ingest_offsets
 WHERE consumer_group = $1 AND topic = $2 AND next_offset IS NOT NULL
"""


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


@dataclass
class PartitionLag:
    partition: int
    end_offset: int
    consumed_offset: int | None
    lag_messages: int
    lag_seconds: float | None


@dataclass
class StatusReport:
    checked_at: str
    services: list[ServiceStatus] = field(default_factory=list)
    topic: str = ""
    consumer_group: str = ""
    lag: list[PartitionLag] = field(default_factory=list)
    lag_error: str | None = None
    ticks_per_second: float | None = None
    newest_tick_age_s: float | None = None
    ticks_error: str | None = None
    dlq_topic: str = ""
    dlq_size: int | None = None
    dlq_error: str | None = None
    backup_dir: str = ""
    last_backup: str | None = None
    last_backup_time: str | None = None

    @property
    def down(self) -> list[str]:
        """The required services that are down."""
        return [s.name for s in self.services if s.required and not s.up]

    @property
    def ok(self) -> bool:
        return not self.down

    @property
    def total_lag(self) -> int | None:
        return None if self.lag_error else sum(p.lag_messages for p in self.lag)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["down"] = self.down
        out["total_lag"] = self.total_lag
        return out


async def collect(
    settings: Settings,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    require_services: bool = False,
    now: Callable[[], float] = time.time,
) -> StatusReport:
    """Probe everything concurrently; never raises for a service that is down."""
    report = StatusReport(
        checked_at=_iso(now()),
        topic=settings.kafka.ticks_topic,
        consumer_group=settings.kafka.consumer_group,
        dlq_topic=settings.kafka.dead_letter_topic,
        backup_dir=str(settings.backup_dir),
    )
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
    services, lag, ticks, dlq = await asyncio.gather(
        asyncio.gather(*probes),
        _guard(_lag(settings), timeout_s),
        _guard(_ticks(settings), timeout_s),
        _guard(_dlq_size(settings), timeout_s),
    )
    report.services = list(services)
    if isinstance(lag, str):
        report.lag_error = lag
    else:
        report.lag = lag
    if isinstance(ticks, str):
        report.ticks_error = ticks
    else:
        report.ticks_per_second, report.newest_tick_age_s = ticks
    if isinstance(dlq, str):
        report.dlq_error = dlq
    else:
        report.dlq_size = dlq
    backup = last_backup(settings.backup_dir)
    if backup is not None:
        report.last_backup, report.last_backup_time = str(backup[0]), backup[1]
    return report


# -- probes -------------------------------------------------------------------------


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
        return ServiceStatus(name, port, False, required, error=_describe(exc))
    return ServiceStatus(name, port, True, required, version=version, detail=detail)


async def _guard(coro: Awaitable[T], timeout_s: float) -> T | str:
    """``coro``'s result, or why it failed (a string)."""
    try:
        return await asyncio.wait_for(coro, timeout_s)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return _describe(exc)


def _describe(exc: BaseException) -> str:
    # asyncpg's and redis's messages name hosts and ports, never passwords; keep them short.
    message = str(exc).splitlines()[0][:160] if str(exc) else ""
    kind = type(exc).__name__
    message = message.removeprefix(f"{kind}: ")
    return f"{kind}: {message}" if message else kind


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        dsn, timeout=DEFAULT_TIMEOUT_S, server_settings={"default_transaction_read_only": "on"}
    )


async def _postgres(settings: Settings) -> tuple[str | None, str | None]:
    conn = await _connect(settings.postgres.auth_dsn.get_secret_value())
    try:
        return str(await conn.fetchval("SHOW server_version")).split()[0], None
    finally:
        await conn.close()


async def _timescale(settings: Settings) -> tuple[str | None, str | None]:
    conn = await _connect(settings.timescale.dsn.get_secret_value())
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
    admin = _admin(settings, timeout_s)
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


def _admin(settings: Settings, timeout_s: float) -> AIOKafkaAdminClient:
    return make_admin(settings.kafka, client_suffix="status", request_timeout_ms=max(1000, int(timeout_s * 1000)))


# -- lag, ticks, DLQ ------------------------------------------------------------------


async def _offsets(settings: Settings, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """Beginning and end offsets of every partition of ``topic`` (none if it does not exist)."""
    consumer = AIOKafkaConsumer(group_id=None, **consumer_options(settings.kafka, "status"))
    try:
        await start_client(consumer, settings.kafka)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}, {}
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: o for tp, o in begin.items()}, {tp.partition: o for tp, o in end.items()}


async def _lag(settings: Settings) -> list[PartitionLag]:
    kafka = settings.kafka
    _, end = await _offsets(settings, kafka.ticks_topic)
    committed: dict[int, int] = {}
    admin = _admin(settings, DEFAULT_TIMEOUT_S)
    try:
        await admin.start()
        for tp, meta in (await admin.list_consumer_group_offsets(kafka.consumer_group)).items():
            if tp.topic == kafka.ticks_topic and meta.offset >= 0:
                committed[tp.partition] = meta.offset
    finally:
        await admin.close()
    conn = await _connect(settings.timescale.dsn.get_secret_value())
    try:
        for r in await conn.fetch(_STORED_OFFSETS, kafka.consumer_group, kafka.ticks_topic):
            committed[r["partition"]] = max(committed.get(r["partition"], 0), r["next_offset"])
        lagging = [p for p, e in end.items() if e - committed.get(p, 0) > 0]
        newest = {r["kafka_partition"]: r["newest"] for r in await conn.fetch(_NEWEST_BY_PARTITION, lagging)}
        db_now: datetime = await conn.fetchval("SELECT now()")
    finally:
        await conn.close()
    out = []
    for p in sorted(end):
        consumed = committed.get(p)
        messages = max(0, end[p] - (consumed or 0))
        if messages == 0:
            seconds: float | None = 0.0
        elif p in newest:
            seconds = max(0.0, (db_now - newest[p]).total_seconds())
        else:
            seconds = None  # nothing of that partition stored within the window
        out.append(PartitionLag(p, end[p], consumed, messages, seconds))
    return out


async def _ticks(settings: Settings) -> tuple[float, float | None]:
    conn = await _connect(settings.timescale.dsn.get_secret_value())
    try:
        row = await conn.fetchrow(_RATE)
    finally:
        await conn.close()
    if row is None:
        raise RuntimeError("no row")
    age = None if row["newest"] is None else max(0.0, (row["now"] - row["newest"]).total_seconds())
    return row["n"] / RATE_WINDOW_S, age


async def _dlq_size(settings: Settings) -> int:
    begin, end = await _offsets(settings, settings.kafka.dead_letter_topic)
    return sum(end[p] - begin.get(p, 0) for p in end)


def last_backup(root: Path) -> tuple[Path, str] | None:
    """The newest complete backup under ``root`` (a ``<UTC time>`` folder with a
    MANIFEST, as ``deploy/local/backup.sh`` leaves it) and its time, ISO 8601."""
    try:
        entries = list(root.iterdir())
    except OSError:
        return None
    found: list[tuple[str, int, Path]] = []
    for entry in entries:
        m = _BACKUP_NAME.match(entry.name)
        if m and (entry / "MANIFEST").is_file():
            found.append((m.group(1), int((m.group(2) or "-0")[1:]), entry))
    if not found:
        return None
    stamp, _, path = max(found)
    when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return path, when.isoformat().replace("+00:00", "Z")


def _port_of(url: str, default: int) -> int:
    try:
        return urlsplit(url).port or default
    except ValueError:
        return default


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- formatting ----------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def format_status(report: StatusReport) -> str:
    rows = [
        (
            s.name,
            str(s.port) if s.port else "-",
            "up" if s.up else "DOWN",
            s.version or "-",
            s.detail or s.error or "",
            "" if s.required else "(optional)",
        )
        for s in report.services
    ]
    widths = [max(len(r[i]) for r in [("service", "port", "state", "version", "detail", ""), *rows]) for i in range(4)]
    out = [f"nexanest status at {report.checked_at}", ""]
    header = ("service", "port", "state", "version")
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + "  detail")
    for r in rows:
        line = "  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True))
        out.append(f"{line}  {r[4]} {r[5]}".rstrip())
    out.append("")
    out.append(f"consumer group {report.consumer_group} on {report.topic}:")
    if report.lag_error:
        out.append(f"  lag unknown: {report.lag_error}")
    elif not report.lag:
        out.append("  topic has no partitions (not created yet)")
    else:
        out.append(f"  {'partition':>9}  {'end':>12}  {'consumed':>12}  {'lag msgs':>10}  {'lag time':>9}")
        for p in report.lag:
            consumed = "-" if p.consumed_offset is None else f"{p.consumed_offset:,}"
            out.append(
                f"  {p.partition:>9}  {p.end_offset:>12,}  {consumed:>12}  {p.lag_messages:>10,}  "
                f"{format_duration(p.lag_seconds):>9}"
            )
        out.append(f"  {'total':>9}  {'':>12}  {'':>12}  {report.total_lag or 0:>10,}")
    out.append("")
    label = 18
    if report.ticks_error:
        out.append(f"{'ticks/s (60 s)':<{label}}unknown: {report.ticks_error}")
        out.append(f"{'newest tick age':<{label}}unknown")
    else:
        out.append(f"{'ticks/s (60 s)':<{label}}{report.ticks_per_second or 0:,.1f}")
        age = format_duration(report.newest_tick_age_s)
        out.append(f"{'newest tick age':<{label}}{age if report.newest_tick_age_s is not None else 'none in 1h'}")
    dlq = f"unknown: {report.dlq_error}" if report.dlq_error else f"{report.dlq_size:,} messages"
    out.append(f"{'DLQ size':<{label}}{dlq} ({report.dlq_topic})")
    backup = (
        f"{report.last_backup_time} ({report.last_backup})" if report.last_backup else f"none in {report.backup_dir}"
    )
    out.append(f"{'last backup':<{label}}{backup}")
    out.append("")
    out.append("all required services up" if report.ok else f"DOWN: {', '.join(report.down)}")
    return "\n".join(out)
