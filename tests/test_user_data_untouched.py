"""The test suite leaves the user's data as it found it (issue 9, part 2).

``tests/conftest.py`` runs this module after every other test, and takes the
snapshot it compares with before the first one (``user_data_before``): the row
counts and write counters of every table of the five databases ``.env`` names,
the key counts of the user's Redis databases, the end offsets of the user's
topics and the committed offsets of the user's consumer groups
(``tests/user_data.py``).
"""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as redis

from nexanest.pipeline.kafka import make_producer
from nexanest.pipeline.settings import Settings, namespaced, separate_databases
from tests.user_data import Snapshot, take_snapshot

pytestmark = pytest.mark.integration


async def test_the_suite_left_the_users_data_as_it_was(
    user_data_before: Snapshot | None, user_settings: Settings
) -> None:
    assert user_data_before is not None, "the snapshot is taken whenever this test is collected"
    changed = user_data_before.differences(await take_snapshot(user_settings))
    assert not changed, "the user's data changed during the suite:\n" + "\n".join(changed)


async def test_the_snapshot_sees_every_kind_of_write(migrated: Settings, test_id: str) -> None:
    """The comparison above can fail. Shown on the suite's own data, taken as if
    it were the user's: a row inserted and deleted again (its table's write
    counters move though its count does not), a Redis key, a record on a topic."""
    before = await take_snapshot(migrated)
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        group = f"test.{test_id}"
        await conn.execute("INSERT INTO ingest_offsets VALUES ($1, 'probe', 0, 1)", group)
        await conn.execute("DELETE FROM ingest_offsets WHERE consumer_group = $1", group)
        # A backend reports its write counters when it next goes idle, at most
        # once a second unless forced: forced, they are in before this returns.
        await conn.execute("SELECT pg_stat_force_next_flush()")
    finally:
        await conn.close()
    r = migrated.redis
    client = redis.Redis.from_url(r.url.get_secret_value(), db=r.db_quotes)
    producer = make_producer(migrated.kafka)
    await producer.start()
    try:
        await client.set(f"test.{test_id}:probe", b"1")
        await producer.send_and_wait(migrated.kafka.events_topic, b"probe")
        changed = before.differences(await take_snapshot(migrated))
    finally:
        await client.delete(f"test.{test_id}:probe")
        await client.aclose()
        await producer.stop()
    assert any(line.startswith(f"redis db {r.db_quotes}: ") for line in changed), changed
    assert any(line.startswith(f"topic {migrated.kafka.events_topic}: 0: ") for line in changed), changed
    assert any(line.startswith("database timescale: public.ingest_offsets: ") for line in changed), changed


def test_tests_are_pointed_away_from_the_users_data(user_settings: Settings, stack: Settings) -> None:
    """What every test gets (``stack`` and all built on it) shares no database,
    Redis database, topic or group with the user's settings."""
    assert stack == namespaced(separate_databases(user_settings), stack.kafka.consumer_group)
    user_dsns = {
        user_settings.timescale.dsn,
        user_settings.timescale.admin_dsn,
        *user_settings.postgres.dsns().values(),
    }
    test_dsns = {stack.timescale.dsn, stack.timescale.admin_dsn, *stack.postgres.dsns().values()}
    assert not user_dsns & test_dsns
    assert all(dsn.get_secret_value().endswith("_test") for dsn in test_dsns)
    u, t = user_settings.redis, stack.redis
    user_dbs = {u.db_sessions, u.db_portfolio, u.db_quotes, u.db_analytics, u.db_notifications}
    assert user_dbs.isdisjoint({t.db_sessions, t.db_portfolio, t.db_quotes, t.db_analytics, t.db_notifications})
    uk, tk = user_settings.kafka, stack.kafka
    user_names = {uk.ticks_topic, uk.dead_letter_topic, uk.events_topic, uk.consumer_group, uk.dlq_replay_group}
    assert user_names.isdisjoint(
        {tk.ticks_topic, tk.dead_letter_topic, tk.events_topic, tk.consumer_group, tk.dlq_replay_group}
    )
