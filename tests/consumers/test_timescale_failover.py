"""The TimescaleDB primary dies under load: Patroni fails over, nothing lost, nothing doubled.

The cluster (``deploy/local/timescale-ha.sh``: a primary and a streaming replica
under Patroni and etcd, asynchronous replication) is started for this module
beside the shared TimescaleDB, which is never touched. A real ``nexanest consume``
process writes through the multi-host DSN (``target_session_attrs=read-write``)
while ticks are published continuously. The primary's WAL sender is paused
until the primary has committed more batches, so those commits exist only on the
primary (what a lagging replica means in asynchronous mode); then its postmaster
is killed with SIGKILL. Patroni promotes the replica, which never received them:
committed transactions are lost, rows and the offsets stored with them alike. The
consumer must notice that the stored offsets went back
(``stored_offsets_regressed``), re-read what was lost, and end with every tick
exactly once. The test waits for each fact it depends on (the promotion,
via Patroni's REST API; rows after it; the old primary streaming again), never
for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from pydantic import SecretStr

from nexanest.ops.migrate import migrate
from nexanest.pipeline.db import RETRYABLE_DB_ERRORS
from nexanest.pipeline.kafka import ensure_topics
from nexanest.pipeline.settings import Settings
from tests import containers
from tests.consumers.test_kafka_cluster import consumer_stall_s
from tests.consumers.test_ticks_to_timescale_faults import (
    assert_exactly_once,
    feed_config,
    finish,
    publish,
    start_consumer,
    stored_offsets,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]
HA_SCRIPT = REPO / "deploy/local/timescale-ha.sh"
REST_PORTS = (8441, 8442)  # Patroni's REST API of members 1 and 2


def ha(*args: str, timeout_s: float = 300) -> str:
    """Run ``timescale-ha.sh ARGS``; a failure fails the test with what the script said."""
    done = subprocess.run([str(HA_SCRIPT), *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        pytest.fail(f"timescale-ha.sh {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def timescale_ha() -> Iterator[str]:
    """The cluster's host list (``127.0.0.1:5441,127.0.0.1:5442``), with a primary
    and a streaming replica in asynchronous mode. ``start`` is idempotent; the
    cluster is stopped at the end of the module when this fixture started it. A
    cluster that cannot start fails the tests (in CI too), it never skips them."""
    if containers.wanted():
        pytest.skip("under testcontainers (Docker): the cluster is run by deploy/local's scripts")
    was_up = subprocess.run([str(HA_SCRIPT), "status"], capture_output=True, check=False).returncode == 0
    ha("start")
    try:
        ha("sync", "off")  # asynchronous: the mode in which a failover can lose commits
        ha("wait-healthy", "120")
        yield ha("hosts").strip()
    finally:
        if not was_up:
            ha("stop")


def on_hosts(dsn: SecretStr, hosts: str) -> SecretStr:
    """``dsn`` (same role, password and database) moved to the cluster's hosts, writable one only."""
    parts = urlsplit(dsn.get_secret_value())
    userinfo = parts.netloc.rpartition("@")[0]
    query = "&".join(q for q in (parts.query, "target_session_attrs=read-write") if q)
    return SecretStr(urlunsplit(parts._replace(netloc=f"{userinfo}@{hosts}", query=query)))


@pytest.fixture
async def on_ha(isolated: Settings, timescale_ha: str) -> Settings:
    """``isolated`` (the test's topics, group, Redis keys and ``timescale_test``
    database) with TimescaleDB moved to the cluster, migrated like the single node."""
    ts = isolated.timescale
    moved = ts.model_copy(
        update={"dsn": on_hosts(ts.dsn, timescale_ha), "admin_dsn": on_hosts(ts.admin_dsn, timescale_ha)}
    )
    settings = isolated.model_copy(update={"timescale": moved})
    await migrate(settings, ["timescale"])
    return settings


@pytest.fixture
async def ha_pool(on_ha: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The ingest role's pool on the cluster: after the failover its dead connections
    are dropped and new ones find the new primary through the DSN."""
    pool = await asyncpg.create_pool(on_ha.timescale.dsn.get_secret_value(), min_size=1, max_size=2)
    assert pool is not None
    yield pool
    pool.terminate()  # at once: a close would wait on connections to a member that died


def _leader() -> str | None:
    """The member that holds Patroni's leader key, as any member's REST API says."""
    for port in REST_PORTS:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/cluster", timeout=1) as answer:
                members = json.load(answer)["members"]
        except (URLError, OSError, ValueError):
            continue
        return next((m["name"] for m in members if m["role"] == "leader"), None)
    return None


async def leader() -> str | None:
    return await asyncio.to_thread(_leader)


async def count_or_none(pool: asyncpg.Pool, source: str) -> int | None:
    """The test's rows, or None while no writable member answers."""
    try:
        return int(await pool.fetchval("SELECT count(*) FROM stock_prices WHERE source = $1", source))
    except RETRYABLE_DB_ERRORS:
        return None


async def test_killing_the_primary_loses_and_doubles_nothing(
    on_ha: Settings,
    ha_pool: asyncpg.Pool,
    test_id: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    settings = on_ha
    await ensure_topics(settings.kafka)
    produced = 40_000
    config = feed_config(test_id, produced, rate=2_000, paced=True)  # 20 s of ticks
    log = tmp_path / "consumer.log"
    consumer = start_consumer(
        settings,
        until_idle_s=300.0,  # ended by SIGTERM once every tick is stored, not by idleness during the outage
        log=log,
        NEXANEST_RETRY__MAX_BACKOFF_S="0.5",
    )
    producing = asyncio.create_task(publish(settings, config))
    paused = False
    try:

        async def rows_above(floor: int) -> bool:
            assert consumer.poll() is None, f"the consumer exited:\n{log.read_text()[-3000:]}"
            rows = await count_or_none(ha_pool, config.source)
            return rows is not None and rows > floor

        await until(lambda: rows_above(0), "the consumer writes ticks to the primary")
        old_primary = await leader()
        assert old_primary is not None

        # Commits the replica never receives: the WAL sender is stopped until the
        # primary has committed a few more batches.
        await asyncio.to_thread(ha, "pause-replication")
        paused = True
        unreplicated_from = await count_or_none(ha_pool, config.source) or 0

        async def committed_unreplicated() -> bool:
            return await rows_above(unreplicated_from + 2_000)

        await until(committed_unreplicated, "batches committed on the primary alone", 30)
        offsets_before = await stored_offsets(ha_pool, settings)
        rows_before = await count_or_none(ha_pool, config.source) or 0
        assert not producing.done(), "the feed ended before the failover; produce for longer"

        await asyncio.to_thread(ha, "kill-primary")
        killed_at = time.monotonic()

        async def promoted() -> bool:
            return (await leader()) not in (None, old_primary)

        await until(promoted, f"Patroni to promote the replica after {old_primary} died", 60)
        failover_s = time.monotonic() - killed_at

        async def writable() -> bool:
            return await count_or_none(ha_pool, config.source) is not None

        await until(writable, "the new primary accepts the test's connections", 60)
        rows_after = await count_or_none(ha_pool, config.source) or 0
        offsets_after = await stored_offsets(ha_pool, settings)
        writable_s = time.monotonic() - killed_at
        # The paused sender outlived its postmaster; let it notice and exit, or the
        # old primary could not start again (its shared memory is still in use).
        await asyncio.to_thread(ha, "resume-replication")
        paused = False
        # What the failover lost: committed rows, and the offsets stored with them (at
        # least: the consumer may have written some of them again before these reads).
        lost_rows = max(0, rows_before - rows_after)
        offsets_back = {
            p: before - offsets_after.get(p, 0)
            for p, before in offsets_before.items()
            if offsets_after.get(p, 0) < before
        }
        await until(lambda: rows_above(rows_after), "the consumer writes to the new primary", 60)

        assert await producing == produced

        async def all_stored() -> bool:
            return await rows_above(produced - 1)

        await until(all_stored, f"all {produced} ticks stored", 90)
    finally:
        if paused:
            await asyncio.to_thread(ha, "resume-replication")
        if not producing.done():
            producing.cancel()
        if consumer.poll() is None:
            consumer.send_signal(signal.SIGTERM)
    logged = await asyncio.to_thread(finish, consumer, 60, log)
    await assert_exactly_once(ha_pool, config.source, produced, settings, config.start_ns)
    # Commits were lost (the replica never received them), their offsets with them,
    # and the consumer re-read them: it saw the stored offsets go back (and wrote the
    # lost rows again: exactly once, above).
    regressions = logged.count("stored_offsets_regressed")
    assert regressions >= 1, f"the consumer never saw its stored offsets go back:\n{logged[-3000:]}"
    reported_back = sum(int(n) for n in re.findall(r"\[\d+\]['\"]:\s*(\d+)", logged))
    assert reported_back >= sum(offsets_back.values())

    # The old primary rejoins as a replica (pg_rewind by Patroni).
    await asyncio.to_thread(ha, "wait-healthy", "120")
    rejoin_s = time.monotonic() - killed_at

    stall = await consumer_stall_s(ha_pool, config.source)
    for name, value in {
        "failover_s": round(failover_s, 2),
        "writable_after_s": round(writable_s, 2),
        "consumer_stall_s": round(stall, 2),
        "lost_rows": lost_rows,
        "lost_offsets": sum(offsets_back.values()),
        "offset_regressions_logged": regressions,
        "offsets_re_read": reported_back,
        "old_primary_streaming_after_s": round(rejoin_s, 1),
    }.items():
        record_property(name, value)
    print(
        f"\nprimary kill: {old_primary} died; new primary after {failover_s:.1f}s, writable after {writable_s:.1f}s;"
        f" the failover lost {lost_rows} committed rows and {sum(offsets_back.values())} stored offsets"
        f" (at least); the consumer saw {reported_back} offsets go back and re-read them;"
        f" consumer stalled at most {stall:.1f}s; old primary streaming again after {rejoin_s:.0f}s"
    )
    assert stall < 60.0
