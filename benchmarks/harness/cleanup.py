"""Removing everything a run created, found by its run id (see ``harness.run``).

    python -m benchmarks.harness.cleanup RUN_ID     # what an interrupted run left behind

Scratch tables, its rows in ``stock_prices``, ``ingest_offsets`` and
``system_events``, the OHLCV bars of its tick days (recomputed from what
remains) and of its own symbols, Redis quote and bar keys, Kafka topics and
consumer groups. Each step retries for a while if its service is restarting.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvloop
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from redis.exceptions import RedisError

from benchmarks.harness.host import KAFKA_SH, state_dir
from nexanest.consumers.ticks_to_timescale import open_analytics_redis, open_quotes_redis
from nexanest.ops.bars_repair import repair
from nexanest.ops.migrate import migrate
from nexanest.pipeline.settings import Settings, load_settings

RUN_ID = re.compile(r"[a-z][0-9a-f]{8}")
ROLLUP_TABLES = ("ohlcv_1m_rollup", "ohlcv_5m_rollup", "ohlcv_1h_rollup", "ohlcv_1d_rollup")
_SERVICE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError, KafkaError)
T = TypeVar("T")


def scratch_database(run_id: str) -> str:
    return f"nexanest_bench_{run_id}"


def superuser_sql(settings: Settings, database: str, *statements: str) -> str:
    """Run ``statements`` (each its own ``-c``, so outside a transaction block) as
    the cluster superuser over deploy/local's unix socket (peer authentication,
    hence ``runuser``): the owner role may not CREATE DATABASE or extensions."""
    port = urlsplit(settings.timescale.admin_dsn.get_secret_value()).port or 5433
    psql = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    argv = [
        psql,
        "-X",
        "-q",
        "-A",
        "-t",
        "-F",
        "\t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(state_dir() / "run"),
        "-p",
        str(port),
    ]
    argv += ["-U", "postgres", "-d", database, *(a for s in statements for a in ("-c", s))]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"psql as postgres failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _in_database(dsn: SecretStr, database: str) -> SecretStr:
    return SecretStr(urlunsplit(urlsplit(dsn.get_secret_value())._replace(path="/" + database)))


def create_scratch_database(settings: Settings, run_id: str) -> Settings:
    """An empty database with the extension, owned by the owner role, that the
    ingest role may use; returns ``settings`` with both TimescaleDB DSNs in it
    (run the migrations next). ``clean_up`` drops it."""
    db, ts = scratch_database(run_id), settings.timescale
    owner, ingest = (urlsplit(d.get_secret_value()).username or "" for d in (ts.admin_dsn, ts.dsn))
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", r) for r in (owner, ingest)):
        raise RuntimeError(f"unexpected role names in the TimescaleDB DSNs: {owner!r}, {ingest!r}")
    superuser_sql(settings, "postgres", f'CREATE DATABASE "{db}" OWNER "{owner}"')
    superuser_sql(
        settings,
        db,
        "SET client_min_messages = warning",
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        f'GRANT CONNECT ON DATABASE "{db}" TO "{ingest}"',
    )
    update = {"dsn": _in_database(ts.dsn, db), "admin_dsn": _in_database(ts.admin_dsn, db)}
    return settings.model_copy(update={"timescale": ts.model_copy(update=update)})


async def prepare_database(settings: Settings, run_id: str) -> tuple[Settings, list[str]]:
    """``create_scratch_database`` with the project's migrations applied (as
    ``nexanest migrate`` applies them): the settings into it and the migrations."""
    scratch = create_scratch_database(settings, run_id)
    applied = await migrate(scratch, ["timescale"])
    return scratch, [a.migration.filename for a in applied]


def symbol_prefix(run_id: str) -> str:
    """Run-scoped symbol prefix: the rollup tables have no source column, so only
    a run's own symbols make its bars removable (scale-out uses it)."""
    return f"B{run_id.upper()}."


async def patiently(report: dict[str, Any], what: str, step: Callable[[], Awaitable[T]]) -> T | None:
    """Run a step, retrying for 90 s while its service is away; then note the failure in ``report``."""
    deadline = time.monotonic() + 90
    while True:
        try:
            return await step()
        except _SERVICE_ERRORS as exc:
            if time.monotonic() > deadline:
                report.setdefault("failed", []).append(f"{what}: {type(exc).__name__}: {exc}")
                return None
            await asyncio.sleep(2)


async def clean_up(base: Settings, run_id: str) -> dict[str, Any]:
    """Remove everything run ``run_id`` created; report what was removed."""
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id!r} is not a benchmark run id (a letter and 8 hex digits)")
    report: dict[str, Any] = {}

    async def database() -> None:
        conn = await asyncpg.connect(base.timescale.admin_dsn.get_secret_value())
        try:
            # A test elsewhere holding a table lock must not hang the clean-up.
            await conn.execute("SET lock_timeout = '20s'")
            tables = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE $1", f"bench\\_{run_id}\\_%"
            )
            for t in tables:
                await conn.execute(f"DROP TABLE IF EXISTS {t['tablename']}")
            report["scratch_tables_dropped"] = len(tables)
            span = await conn.fetchrow(
                "SELECT min(time) AS lo, max(time) AS hi FROM stock_prices WHERE source LIKE $1", f"bench-{run_id}%"
            )
            for key, sql, pattern in (
                ("stock_prices_rows_deleted", "DELETE FROM stock_prices WHERE source LIKE $1", f"bench-{run_id}%"),
                (
                    "ingest_offsets_rows_deleted",
                    "DELETE FROM ingest_offsets WHERE consumer_group LIKE $1",
                    f"bench-{run_id}-%",
                ),
                (
                    "system_events_deleted",
                    "DELETE FROM system_events WHERE details->>'group' LIKE $1",
                    f"bench-{run_id}-%",
                ),
            ):
                report[key] = int((await conn.execute(sql, pattern)).split()[-1])
            deleted = 0
            for table in ROLLUP_TABLES:
                status = await conn.execute(f"DELETE FROM {table} WHERE symbol LIKE $1", symbol_prefix(run_id) + "%")
                deleted += int(status.split()[-1])
            report["rollup_rows_deleted"] = deleted
            if span is not None and span["lo"] is not None:
                # The run's ticks were merged into the bars of their (synthetic)
                # symbols; with the ticks gone, recomputing those days takes them out.
                fixed = await repair(conn, span["lo"], span["hi"] + timedelta(microseconds=1))
                report["bars_repaired"] = {"from": fixed.start.isoformat(), "to": fixed.end.isoformat()}
        finally:
            await conn.close()

    async def redis_keys() -> None:
        removed = 0
        for r in (open_quotes_redis(base), open_analytics_redis(base)):  # quotes, cached bars
            try:
                keys = [k async for k in r.scan_iter(match=f"bench:{run_id}:*", count=1000)]
                if keys:
                    await r.delete(*keys)
                removed += len(keys)
            finally:
                await r.aclose()
        report["redis_keys_deleted"] = removed

    async def kafka() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=base.kafka.bootstrap_servers)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(f"bench.{run_id}.")]
            if topics:
                await admin.delete_topics(topics)
            report["kafka_topics_deleted"] = len(topics)
            groups = sorted(g[0] for g in await admin.list_consumer_groups() if g[0].startswith(f"bench-{run_id}-"))
        finally:
            await admin.close()
        if groups:
            argv = [str(KAFKA_SH), "run-class", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"]
            argv += ["--bootstrap-server", base.kafka.bootstrap_servers, "--delete"]
            for g in groups:
                argv += ["--group", g]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            report["kafka_groups_delete_exit"] = await proc.wait()
        report["kafka_groups_deleted"] = len(groups)

    try:
        db = scratch_database(run_id)
        if superuser_sql(base, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{db}'").strip():
            superuser_sql(base, "postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            report["scratch_database_dropped"] = db
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        report.setdefault("failed", []).append(f"scratch database: {exc}")
    await patiently(report, "database", database)
    await patiently(report, "redis", redis_keys)
    await patiently(report, "kafka", kafka)
    return report


def main() -> int:
    if len(sys.argv) != 2 or not RUN_ID.fullmatch(sys.argv[1]):
        print(__doc__, file=sys.stderr)
        return 2
    report = uvloop.run(clean_up(load_settings(), sys.argv[1]))
    print(json.dumps(report, indent=2))
    return 1 if report.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
