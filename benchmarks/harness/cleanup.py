"""The scratch database a run writes into, and removing everything a run created.

    python -m benchmarks.harness.cleanup RUN_ID [PORT]   # what an interrupted run left behind
                                                         # (PORT: the cluster of its scratch database)

Everything a run creates carries its run id (``harness.run``): the scratch
database ``nexanest_bench_<run>``, topics ``bench.<run>.*``, consumer groups
``bench-<run>-*``, Redis keys ``bench:<run>:*``. Each step retries for a while
if its service is restarting.
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
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvloop
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from redis.exceptions import RedisError

from benchmarks.harness.sampling import KAFKA_SH, state_dir
from nexanest.consumers.ticks_to_timescale import open_analytics_redis, open_quotes_redis
from nexanest.ops.migrate import migrate
from nexanest.pipeline.kafka import make_admin
from nexanest.pipeline.settings import Settings, load_settings

RUN_ID = re.compile(r"[a-z][0-9a-f]{8}")
_SERVICE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError, KafkaError)
T = TypeVar("T")


def scratch_database(run_id: str) -> str:
    return f"nexanest_bench_{run_id}"


def superuser_sql(settings: Settings, database: str, *statements: str, port: int | None = None) -> str:
    """Run ``statements`` (each its own ``-c``, so outside a transaction block) as the superuser
    of the cluster on ``port`` (the admin DSN's by default) over deploy/local's unix socket (peer
    authentication, hence ``runuser``): the owner role may not CREATE DATABASE or extensions."""
    port = port or urlsplit(settings.timescale.admin_dsn.get_secret_value()).port or 5433
    argv = [shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    argv += ["-h", str(state_dir() / "run"), "-p", str(port), "-U", "postgres", "-d", database]
    argv += [a for s in statements for a in ("-c", s)]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"psql as postgres failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


async def prepare_database(settings: Settings, run_id: str, port: int | None = None) -> tuple[Settings, list[str]]:
    """An empty database with the extension, owned by the owner role, usable by the
    ingest role, with the project's migrations applied (as ``nexanest migrate``
    applies them): ``settings`` pointing into it, and the migrations. ``port``: as
    ``superuser_sql``'s (a cluster whose DSN lists several hosts)."""
    db, ts = scratch_database(run_id), settings.timescale
    owner, ingest = (urlsplit(d.get_secret_value()).username or "" for d in (ts.admin_dsn, ts.dsn))
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", r) for r in (owner, ingest)):
        raise RuntimeError(f"unexpected role names in the TimescaleDB DSNs: {owner!r}, {ingest!r}")
    superuser_sql(settings, "postgres", f'CREATE DATABASE "{db}" OWNER "{owner}"', port=port)
    extension = "CREATE EXTENSION IF NOT EXISTS timescaledb"
    grant = f'GRANT CONNECT ON DATABASE "{db}" TO "{ingest}"'
    superuser_sql(settings, db, "SET client_min_messages = warning", extension, grant, port=port)

    def inside(dsn: SecretStr) -> SecretStr:
        return SecretStr(urlunsplit(urlsplit(dsn.get_secret_value())._replace(path="/" + db)))

    timescale = ts.model_copy(update={"dsn": inside(ts.dsn), "admin_dsn": inside(ts.admin_dsn)})
    scratch = settings.model_copy(update={"timescale": timescale})
    return scratch, [a.migration.filename for a in await migrate(scratch, ["timescale"])]


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


async def clean_up(base: Settings, run_id: str, port: int | None = None) -> dict[str, Any]:
    """Remove everything run ``run_id`` created (its scratch database on the cluster of ``port``,
    as ``superuser_sql``'s); report what was removed."""
    if not RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id!r} is not a benchmark run id (a letter and 8 hex digits)")
    report: dict[str, Any] = {}

    async def redis_keys() -> None:
        report["redis_keys_deleted"] = 0
        for r in (open_quotes_redis(base), open_analytics_redis(base)):  # quotes, cached bars
            try:
                keys = [k async for k in r.scan_iter(match=f"bench:{run_id}:*", count=1000)]
                if keys:
                    await r.delete(*keys)
                report["redis_keys_deleted"] += len(keys)
            finally:
                await r.aclose()

    async def kafka() -> None:
        admin = make_admin(base.kafka, client_suffix="bench-cleanup")
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
            argv += [a for g in groups for a in ("--group", g)]
            proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            report["kafka_groups_delete_exit"] = await proc.wait()
        report["kafka_groups_deleted"] = len(groups)

    try:
        db = scratch_database(run_id)
        if superuser_sql(base, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{db}'", port=port).strip():
            superuser_sql(base, "postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', port=port)
            report["scratch_database_dropped"] = db
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        report.setdefault("failed", []).append(f"scratch database: {exc}")
    for what, step in (("redis", redis_keys), ("kafka", kafka)):
        await patiently(report, what, step)
    return report


def main() -> int:
    run_id, *port = sys.argv[1:] or [""]
    if not RUN_ID.fullmatch(run_id) or len(port) > 1 or not all(p.isdigit() for p in port):
        print(__doc__, file=sys.stderr)
        return 2
    report = uvloop.run(clean_up(load_settings(), run_id, int(port[0]) if port else None))
    print(json.dumps(report, indent=2))
    return 1 if report.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
