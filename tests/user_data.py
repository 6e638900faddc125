"""What the user's own data looks like, to prove the test suite leaves it alone.

The suite runs on databases, Redis databases and topics of its own
(``separate_databases``, ``namespaced``); ``make run`` and the user's tools use
the ones in ``.env``. A ``Snapshot`` of the latter is taken before the first test
and compared after the last (``tests/test_user_data_untouched.py``):

- every table of the five PostgreSQL databases: its row count, and PostgreSQL's
  counters of inserted, updated and deleted rows (so a row changed in place, as
  a bar repair does, shows too). Hypertables count their chunks' rows; their
  chunks' counters are listed under their own names, so a new chunk shows as
  well. TimescaleDB's own bookkeeping (``_timescaledb_*`` catalog and job
  tables) is left out: its background jobs write there on their own;
- the key count of each of the user's Redis databases;
- the end offsets of the user's topics and the committed offsets of the user's
  consumer groups.

A database, topic or group that does not exist is recorded as absent, and must
still be absent afterwards. The comparison assumes nothing else writes the
user's data meanwhile (stop ``make run`` while the tests run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from nexanest.ops.migrate import TARGETS, target_dsn
from nexanest.pipeline.settings import Settings

#: Tables whose rows are counted: everything but the system catalogs and
#: TimescaleDB's internals (a hypertable's count includes its chunks).
_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_%'
   AND n.nspname NOT LIKE '\\_timescaledb\\_%'
 ORDER BY 1
"""

#: Write counters of the same tables and of every hypertable chunk.
_COUNTERS = """
SELECT format('%I.%I', schemaname, relname) AS name, n_tup_ins, n_tup_upd, n_tup_del
  FROM pg_stat_user_tables
 WHERE schemaname NOT LIKE '\\_timescaledb\\_%'
    OR (schemaname = '_timescaledb_internal' AND relname LIKE '%\\_chunk')
"""


@dataclass(frozen=True)
class Snapshot:
    #: database -> table -> {"rows", "inserted", "updated", "deleted"} (a chunk:
    #: its counters only); None: no such database.
    databases: dict[str, dict[str, dict[str, int]] | None] = field(default_factory=dict)
    #: Redis database -> key count.
    redis_keys: dict[int, int] = field(default_factory=dict)
    #: topic -> partition -> end offset; None: no such topic.
    topics: dict[str, dict[int, int] | None] = field(default_factory=dict)
    #: consumer group -> "topic/partition" -> committed offset.
    groups: dict[str, dict[str, int]] = field(default_factory=dict)

    def differences(self, after: Snapshot) -> list[str]:
        """Each difference from ``after`` as a line a person can act on (empty: the same)."""
        lines: list[str] = []
        kinds: list[tuple[str, Mapping[Any, object], Mapping[Any, object]]] = [
            ("database", self.databases, after.databases),
            ("redis db", self.redis_keys, after.redis_keys),
            ("topic", self.topics, after.topics),
            ("group", self.groups, after.groups),
        ]
        for kind, before_map, after_map in kinds:
            for key in sorted(set(before_map) | set(after_map), key=str):
                old, new = before_map.get(key), after_map.get(key)
                if old == new:
                    continue
                if isinstance(old, dict) and isinstance(new, dict):
                    lines.extend(
                        f"{kind} {key}: {item}: {old.get(item)} -> {new.get(item)}"
                        for item in sorted(set(old) | set(new), key=str)
                        if old.get(item) != new.get(item)
                    )
                else:
                    lines.append(f"{kind} {key}: {old} -> {new}")
        return lines


async def take_snapshot(user: Settings) -> Snapshot:
    """The state of the data ``user`` (the settings ``make run`` uses) points at."""
    return Snapshot(
        databases={target: await _database(target_dsn(user, target).get_secret_value()) for target in TARGETS},
        redis_keys=await _redis_keys(user),
        topics=await _topics(user),
        groups=await _groups(user),
    )


async def _database(dsn: str) -> dict[str, dict[str, int]] | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        # One snapshot of the data and of the counters.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            state: dict[str, dict[str, int]] = {}
            for row in await conn.fetch(_TABLES):
                state[row["name"]] = {"rows": await conn.fetchval(f"SELECT count(*) FROM {row['name']}")}
            for row in await conn.fetch(_COUNTERS):
                state.setdefault(row["name"], {}).update(
                    inserted=row["n_tup_ins"], updated=row["n_tup_upd"], deleted=row["n_tup_del"]
                )
            return state
    finally:
        await conn.close()


async def _redis_keys(user: Settings) -> dict[int, int]:
    r = user.redis
    counts: dict[int, int] = {}
    for db in (r.db_sessions, r.db_portfolio, r.db_quotes, r.db_analytics, r.db_notifications):
        client = redis.Redis.from_url(r.url.get_secret_value(), db=db)
        try:
            counts[db] = int(await client.dbsize())
        finally:
            await client.aclose()
    return counts


def _user_topics(user: Settings) -> list[str]:
    k = user.kafka
    return [k.ticks_topic, k.dead_letter_topic, k.events_topic]


async def _topics(user: Settings) -> dict[str, dict[int, int] | None]:
    k = user.kafka
    admin = AIOKafkaAdminClient(bootstrap_servers=k.bootstrap_servers, client_id=f"{k.client_id}-test-snapshot")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in _user_topics(user) if t in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    ends: dict[str, dict[int, int] | None] = {t: None if t not in existing else {} for t in _user_topics(user)}
    if not partitions:
        return ends
    # read_uncommitted: the high watermark, which moves with every record written.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=k.bootstrap_servers,
        client_id=f"{k.client_id}-test-snapshot",
        isolation_level="read_uncommitted",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        offsets: dict[Any, int] = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    for tp, offset in offsets.items():
        topic_ends = ends[tp.topic]
        assert topic_ends is not None  # the partitions asked for are those of existing topics
        topic_ends[tp.partition] = offset
    return ends


async def _groups(user: Settings) -> dict[str, dict[str, int]]:
    k = user.kafka
    admin = AIOKafkaAdminClient(bootstrap_servers=k.bootstrap_servers, client_id=f"{k.client_id}-test-snapshot")
    await admin.start()
    try:
        committed: dict[str, dict[str, int]] = {}
        for group in (k.consumer_group, k.dlq_replay_group):
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {f"{tp.topic}/{tp.partition}": meta.offset for tp, meta in offsets.items()}
        return committed
    finally:
        await admin.close()
