"""``ops/status.py`` and its parts (``status_services``, ``status_pipeline``,
``status_report``): formatting and the backup folder (unit); lag, ticks/s, DLQ
size and down services against the real stack (integration)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import msgspec
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.status import collect, last_backup
from nexanest.ops.status_pipeline import PartitionLag
from nexanest.ops.status_report import StatusReport, format_duration, format_status
from nexanest.ops.status_services import ServiceStatus
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed
from nexanest.schemas.ticks import Tick, encode_tick
from tests.prometheus import free_ports

# -- unit ---------------------------------------------------------------------------


def test_durations_read_at_a_glance() -> None:
    assert format_duration(None) == "-"
    assert format_duration(0) == "0.0s"
    assert format_duration(59.94) == "59.9s"
    assert format_duration(90) == "1.5m"
    assert format_duration(5400) == "1.5h"
    assert format_duration(2 * 86400) == "2.0d"


def _report() -> StatusReport:
    return StatusReport(
        checked_at="2026-12-01T05:00:00Z",
        services=[
            ServiceStatus("timescaledb", 5433, True, True, "2.19.3 (PostgreSQL 15.18)", "license apache"),
            ServiceStatus("redis", 6379, False, True, error="ConnectionRefusedError: refused"),
            ServiceStatus("auth", 8001, False, False, error="ConnectionRefusedError: refused"),
        ],
        topic="ticks",
        consumer_group="g",
        lag=[PartitionLag(0, 1500, 1000, 500, 12.5), PartitionLag(1, 7, None, 7, None)],
        ticks_per_second=41.5,
        newest_tick_age_s=0.4,
        dlq_topic="ticks.dlq",
        dlq_size=3,
        backup_dir="backups",
        last_backup="backups/20261201T040000Z",
        last_backup_time="2026-12-01T04:00:00Z",
    )


def test_the_text_report_aligns_columns_and_names_what_is_down() -> None:
    text = format_status(_report())
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("service"))
    rows = [line for line in lines if line.split(" ")[0] in ("timescaledb", "redis", "auth")]
    assert len(rows) == 3
    # Every row's state and version start in the header's columns.
    for column in ("state", "version"):
        at = header.index(column)
        assert all(row[at - 2 : at] == "  " and row[at] != " " for row in rows), (column, rows)
    assert "license apache" in rows[0]
    assert " DOWN " in rows[1]
    assert rows[2].endswith("(optional)")
    assert "      1,500         1,000         500      12.5s" in text
    assert "          7             -           7          -" in text
    assert "total" in text
    assert "  507" in text
    assert "ticks/s (60 s)    41.5" in text
    assert "DLQ size          3 messages (ticks.dlq)" in text
    assert "last backup       2026-12-01T04:00:00Z (backups/20261201T040000Z)" in text
    # Only the required service counts as down.
    assert lines[-1] == "DOWN: redis"


def test_a_report_with_everything_up_says_so() -> None:
    report = _report()
    report.services = report.services[:1]
    assert report.ok
    assert report.down == []
    assert format_status(report).splitlines()[-1] == "all required services up"
    assert report.to_json()["total_lag"] == 507


def test_the_last_backup_is_the_newest_complete_folder(tmp_path: Path) -> None:
    assert last_backup(tmp_path / "missing") is None
    assert last_backup(tmp_path) is None
    for name, complete in [
        ("20261130T010000Z", True),
        ("20261201T010000Z", True),
        ("20261201T010000Z-2", True),  # a second backup in the same second
        ("20261201T020000Z.partial", True),  # still being written
        ("20261201T030000Z", False),  # no MANIFEST: failed or foreign
        ("notes", True),
    ]:
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "MANIFEST").write_text("created\t...\n")
    found = last_backup(tmp_path)
    assert found == (tmp_path / "20261201T010000Z-2", "2026-12-01T01:00:00Z")


# -- integration --------------------------------------------------------------------


async def _publish(settings: Settings, count: int, source: str) -> None:
    config = SyntheticConfig(
        symbols=5, rate=0, count=count, seed=7, start_ns=time.time_ns() - 5 * 10**9, source=source, paced=False
    )
    assert await publish_feed(settings.kafka, SyntheticFeed(config), source) == count


@pytest.mark.integration
async def test_lag_is_what_was_published_then_zero_once_drained(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str, tmp_path: Path
) -> None:
    settings = isolated.model_copy(update={"backup_dir": tmp_path})
    await ensure_topics(settings.kafka)
    await _publish(settings, 300, f"status-{test_id}")

    before = await collect(settings)
    assert before.ok, before.down
    assert before.lag_error is None
    assert sum(p.lag_messages for p in before.lag) == 300
    assert all(p.consumed_offset is None and p.lag_messages == p.end_offset for p in before.lag)
    assert before.dlq_size == 0
    assert before.last_backup is None

    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=1.0)
    assert stats.written == 300

    after = await collect(settings)
    assert after.total_lag == 0
    assert sum(p.end_offset for p in after.lag) == 300
    assert all(p.consumed_offset == (p.end_offset or None) and p.lag_seconds == 0.0 for p in after.lag)
    # The offsets the group consumed are the ones the consumer stored in TimescaleDB.
    stored = await timescale_pool.fetch(
        "SELECT partition, next_offset FROM ingest_offsets"
        " WHERE consumer_group = $1 AND topic = $2 AND next_offset IS NOT NULL",
        settings.kafka.consumer_group,
        settings.kafka.ticks_topic,
    )
    assert {r["partition"]: r["next_offset"] for r in stored} == {
        p.partition: p.consumed_offset for p in after.lag if p.end_offset
    }
    # The 300 ticks are 5 s old: in the last minute's rate, and the newest is at most that old.
    assert after.ticks_per_second is not None
    assert after.ticks_per_second >= 300 / 60
    assert after.newest_tick_age_s is not None
    assert after.newest_tick_age_s < 60


@pytest.mark.integration
async def test_lag_in_seconds_is_the_age_of_the_partitions_newest_stored_tick(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    await ensure_topics(isolated.kafka)
    await _publish(isolated, 100, f"status-a-{test_id}")
    assert (await run_consumer(isolated, asyncio.Event(), until_idle_s=1.0)).written == 100
    await _publish(isolated, 100, f"status-b-{test_id}")  # published, not consumed

    report = await collect(isolated)
    lagging = [p for p in report.lag if p.lag_messages]
    assert sum(p.lag_messages for p in lagging) == 100
    for p in lagging:
        newest = await timescale_pool.fetchval(
            "SELECT extract(epoch FROM now() - max(time)) FROM stock_prices"
            " WHERE kafka_partition = $1 AND time > now() - interval '1 hour' AND time <= now()",
            p.partition,
        )
        assert p.lag_seconds is not None
        assert newest is not None
        assert abs(p.lag_seconds - float(newest)) < 5


@pytest.mark.integration
async def test_the_dlq_size_is_what_was_dead_lettered(isolated: Settings, test_id: str) -> None:
    now = time.time_ns()
    good = Tick(
        symbol="GOOD", exchange="XNAS", price_e9=10**10, size_e9=10**9, ts_ns=now, source=f"dlq-{test_id}", seq=1
    )
    bad = [
        b"\xc1\xffnot msgpack",
        msgspec.msgpack.encode({"symbol": "GOOD", "price_e9": "NaN"}),
        encode_tick(msgspec.structs.replace(good, symbol="bad symbol", seq=2)),
    ]
    await ensure_topics(isolated.kafka)
    producer = make_producer(isolated.kafka)
    await producer.start()
    try:
        for value in [encode_tick(good), *bad]:
            await producer.send_and_wait(isolated.kafka.ticks_topic, value, key=b"GOOD")
    finally:
        await producer.stop()
    stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=1.0)
    assert (stats.written, stats.rejected) == (1, 3)

    report = await collect(isolated)
    assert report.dlq_size == 3
    assert report.total_lag == 0


@pytest.mark.integration
async def test_a_closed_port_is_reported_down_and_the_rest_up(isolated: Settings) -> None:
    redis_port, pg_port, prom_port, am_port = free_ports(4)
    settings = isolated.model_copy(
        update={
            "redis": isolated.redis.model_copy(update={"url": SecretStr(f"redis://127.0.0.1:{redis_port}")}),
            "postgres": isolated.postgres.model_copy(
                update={"auth_dsn": SecretStr(f"postgresql://nobody:secret-pw@127.0.0.1:{pg_port}/auth_test")}
            ),
            "prometheus_url": f"http://127.0.0.1:{prom_port}",
            "alertmanager_url": f"http://127.0.0.1:{am_port}",
        }
    )
    report = await collect(settings, timeout_s=2.0)
    state = {s.name: (s.up, s.port) for s in report.services}
    assert state["redis"] == (False, redis_port)
    assert state["postgresql"] == (False, pg_port)
    assert state["prometheus"] == (False, prom_port)
    assert state["alertmanager"] == (False, am_port)
    assert state["timescaledb"][0]
    assert state["kafka"][0]
    assert report.down == ["postgresql", "redis", "prometheus", "alertmanager"]
    assert not report.ok
    assert "secret-pw" not in format_status(report)
    assert "secret-pw" not in json.dumps(report.to_json())


@pytest.mark.integration
async def test_status_joins_no_group_and_stores_no_offset(isolated: Settings, timescale_pool: asyncpg.Pool) -> None:
    await ensure_topics(isolated.kafka)
    await _publish(isolated, 10, "status-readonly")
    report = await collect(isolated)
    assert report.total_lag == 10
    admin = AIOKafkaAdminClient(bootstrap_servers=isolated.kafka.bootstrap_servers)
    await admin.start()
    try:
        groups = {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert isolated.kafka.consumer_group not in groups
    assert not await timescale_pool.fetchval(
        "SELECT count(*) FROM ingest_offsets WHERE consumer_group = $1", isolated.kafka.consumer_group
    )
