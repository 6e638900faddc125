"""The consumer under faults, against the real services: nothing lost, nothing doubled.

Every test ends by comparing the table with the produced set: exactly the
produced (source, seq) pairs, each once. Service restarts use the project's own
deploy/local scripts; consumers that are killed run as real processes. A test
orders its steps by waiting for the fact each depends on (``until``: rows
written, partitions held, a backend waiting on a lock, an outage in the log),
never by sleeping for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.verify import verify
from nexanest.pipeline.consumer_position import ConsumerPosition
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed
from nexanest.schemas.ticks import encode_tick
from tests import containers

pytestmark = [pytest.mark.integration, pytest.mark.faults]

REPO = Path(__file__).resolve().parents[2]


def feed_config(test_id: str, count: int | None, *, rate: float = 50_000, paced: bool = False) -> SyntheticConfig:
    return SyntheticConfig(
        symbols=40,
        rate=rate,
        count=count,
        seed=int(test_id[:6], 16),
        start_ns=time.time_ns() - 120 * 10**9,
        source=f"fault-{test_id}",
        paced=paced,
    )


async def publish(settings: Settings, config: SyntheticConfig) -> int:
    return await publish_feed(settings.kafka, SyntheticFeed(config), config.source)


async def assert_exactly_once(
    pool: asyncpg.Pool, source: str, produced: int, settings: Settings | None = None, start_ns: int | None = None
) -> None:
    """The operators' check (`nexanest verify`) when the topic is known, plus a direct count."""
    if settings is not None and start_ns is not None:
        report = await verify(settings, settings.kafka.ticks_topic, start_ns, start_ns + 3600 * 10**9, source=source)
        assert (report.missing, report.duplicates, report.unexpected) == (0, 0, 0), report
        assert report.db_rows == produced
    rows, distinct, lo, hi = await pool.fetchrow(
        "SELECT count(*), count(DISTINCT source_seq), min(source_seq), max(source_seq)"
        " FROM stock_prices WHERE source = $1",
        source,
    )
    missing = produced - distinct
    duplicates = rows - distinct
    assert (missing, duplicates) == (0, 0), f"{missing} missing, {duplicates} duplicate rows"
    assert (lo, hi) == (0, produced - 1)


def consumer_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {**os.environ, **namespace_environment(settings), "NEXANEST_LOG__LEVEL": "warning", **extra}


def start_consumer(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    until_idle_s: float = 3.0,
    log: Path | None = None,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """A consumer process; what it logs goes to ``log`` (the test can watch it
    while it runs) or, without one, to a pipe ``finish`` reads. Its extra
    ``NEXANEST_*`` variables come from ``env`` (one set shared by several
    starts) and ``extra``."""
    extra = {**(env or {}), **extra}
    if log is None:
        return subprocess.Popen(
            [sys.executable, "-m", "nexanest.cli.main", "consume", "--until-idle", str(until_idle_s)],
            cwd=REPO,
            env=consumer_env(settings, **extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "nexanest.cli.main", "consume", "--until-idle", str(until_idle_s)],
            cwd=REPO,
            env=consumer_env(settings, **extra),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 120, log: Path | None = None) -> str:
    """Wait for a consumer process to exit cleanly; return what it logged."""
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        logged = log.read_text() if log is not None else err.decode()
        pytest.fail(f"consumer still running after {timeout_s}s:\n{logged[-3000:]}")
    logged = log.read_text() if log is not None else err.decode()
    assert proc.returncode == 0, logged[-3000:]
    return logged


async def until(fact: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60.0) -> None:
    """Wait for ``fact`` to hold (polled), or fail the test saying what never happened."""
    deadline = time.monotonic() + timeout_s
    while not await fact():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:.0f}s for: {what}", pytrace=False)
        await asyncio.sleep(0.05)


def service_script(service: str, action: str) -> None:
    """Run ``deploy/local/<service>.sh <action>`` (stop or start); a failure shows what the script said."""
    done = subprocess.run(
        [str(REPO / "deploy/local" / f"{service}.sh"), action],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"{service}.sh {action} exited {done.returncode}:\n{done.stdout}{done.stderr}", pytrace=False)


async def members_holding_partitions(settings: Settings) -> list[list[int]]:
    """Per member of the settings' consumer group, the ticks partitions it holds,
    as the group coordinator has them once the group is stable (empty while it
    rebalances: an assignment in flux is nobody's yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.kafka.consumer_group])
    finally:
        await admin.close()
    (group,) = response.to_object()["groups"]
    if group["state"] != "Stable":
        return []
    topic = settings.kafka.ticks_topic
    return [
        sorted(tp.partition for tp in ConsumerProtocolMemberAssignment.decode(m["member_assignment"]).partitions()
               if tp.topic == topic)
        for m in group["members"]
    ]  # fmt: skip


async def rows_of(pool: asyncpg.Pool, source: str) -> int:
    """Rows of a fault test's feed (its ticks are stamped from two minutes before it
    started). Polled often: bounded in time, so only the newest chunk's recent pages
    are read (stock_prices has no index on source; the BRIN on time serves this)."""
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM stock_prices WHERE time >= now() - interval '1 hour' AND source = $1", source
        )
    )


# -- crashes --------------------------------------------------------------------


class CrashBeforeKafkaCommit(Exception):
    pass


async def test_crash_between_database_commit_and_kafka_commit_repeats_nothing(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test that must never break: the batch is in the table, Kafka never
    heard of it, the consumer dies. The next one must neither repeat nor skip it."""
    config = feed_config(test_id, 10_000)
    assert await publish(isolated, config) == 10_000
    settings = isolated.model_copy(update={"batch": isolated.batch.model_copy(update={"max_rows": 1_000})})

    batches = 0
    real_commit = ConsumerPosition.commit

    async def commit_then_crash(self: ConsumerPosition, next_offsets: dict[TopicPartition, int]) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise CrashBeforeKafkaCommit
        await real_commit(self, next_offsets)

    monkeypatch.setattr(ConsumerPosition, "commit", commit_then_crash)
    with pytest.raises(CrashBeforeKafkaCommit):
        await run_consumer(settings, asyncio.Event(), until_idle_s=3.0)
    monkeypatch.setattr(ConsumerPosition, "commit", real_commit)
    stored = await rows_of(timescale_pool, config.source)
    assert sum((await kafka_committed(settings)).values()) < stored  # Kafka is behind the table
    # The table's offsets win: the next consumer reads only what is not stored (the
    # uniqueness rule would hide a re-read, its count does not).
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=3.0)
    assert stats.consumed == 10_000 - stored
    await assert_exactly_once(timescale_pool, config.source, 10_000, settings, config.start_ns)


async def kafka_committed(settings: Settings) -> dict[int, int]:
    """The group's committed offset per partition of its ticks topic (absent: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.kafka.consumer_group)
    finally:
        await admin.close()
    topic = settings.kafka.ticks_topic
    return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset >= 0}


async def stored_offsets(pool: asyncpg.Pool, settings: Settings) -> dict[int, int]:
    """The next offset per partition that the database holds for the group (``ingest_offsets``)."""
    rows = await pool.fetch(
        "SELECT partition, next_offset FROM ingest_offsets"
        " WHERE consumer_group = $1 AND topic = $2 AND next_offset IS NOT NULL",  # NULL: claimed, never written
        settings.kafka.consumer_group,
        settings.kafka.ticks_topic,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


def with_application_name(dsn: str, name: str) -> str:
    """``dsn`` whose sessions carry ``application_name``: the test finds the child's backend by it."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


async def test_kill_9_between_database_commit_and_kafka_commit_repeats_nothing(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """A real consumer process is killed with SIGKILL after a batch's transaction
    (rows and offsets) committed and before its offsets reached Kafka.

    The consumer writes a batch as: COPY + offsets, COMMIT; then the after-commit
    sinks (the market index INSERT); then Kafka's commit. The test holds
    ``market_indices`` in SHARE mode (it blocks INSERTs, not the consumer's
    start-up SELECTs), so the consumer commits a batch whose ticks move its index
    and then waits on that lock. The test waits for the facts: the consumer's
    backend waiting on the lock, the table holding exactly the rows of the stored
    offsets, Kafka's committed offsets behind them. Then kill -9, release the
    lock, and a new consumer must store every tick exactly once."""
    produced = 10_000
    config = feed_config(test_id, produced)
    constituent = next(iter(SyntheticFeed(config).generate())).symbol
    assert await publish(isolated, config) == produced
    app = f"kill9-{test_id}"
    index = f"K9{test_id.upper()}"
    owner = await asyncpg.connect(isolated.timescale.admin_dsn.get_secret_value())
    blocked: subprocess.Popen[bytes] | None = None
    try:
        holding = owner.transaction()
        await holding.start()
        await owner.execute("LOCK TABLE market_indices IN SHARE MODE")
        blocked = start_consumer(
            isolated,
            until_idle_s=60.0,
            NEXANEST_BATCH__MAX_ROWS="1000",
            NEXANEST_KAFKA__GROUP_INSTANCE_ID=app,
            NEXANEST_TIMESCALE__DSN=with_application_name(isolated.timescale.dsn.get_secret_value(), app),
            NEXANEST_INDICES=json.dumps([{"name": index, "method": "price_weighted", "symbols": [constituent]}]),
            # Other tests' newer ticks of the same symbol must not become the index's
            # price, or this test's older ticks would never move it.
            NEXANEST_CONSUMER__INDEX_SEED_WINDOW_S="0.001",
            NEXANEST_CONSUMER__INDEX_REFRESH_S="0",
        )

        async def waiting_on_the_lock() -> bool:
            assert blocked is not None
            assert blocked.poll() is None, f"the consumer exited: {blocked.communicate()[1].decode()[-3000:]}"
            # Not on the lock's connection: in a transaction pg_stat_activity is a snapshot.
            return bool(
                await timescale_pool.fetchval(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE a.application_name = $1 AND l.relation = 'market_indices'::regclass AND NOT l.granted",
                    app,
                )
            )

        await until(waiting_on_the_lock, "the consumer's index insert waits on the lock, after its COMMIT")
        stored = await stored_offsets(timescale_pool, isolated)
        rows = await rows_of(timescale_pool, config.source)
        committed = await kafka_committed(isolated)
        # The blocked batch is in the table with its offsets (every message is a good
        # tick, so rows = offsets), and Kafka has not heard of it.
        assert rows == sum(stored.values()) > 0
        assert all(committed.get(p, 0) <= n for p, n in stored.items())
        assert sum(committed.values()) < sum(stored.values())

        blocked.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(blocked.wait, 30) == -signal.SIGKILL
        assert await kafka_committed(isolated) == committed
        await holding.rollback()
    finally:
        if blocked is not None and blocked.poll() is None:
            blocked.kill()
            blocked.wait()
        await owner.close()
    # Static membership: the new consumer takes the killed one's partitions at once.
    await asyncio.to_thread(finish, start_consumer(isolated, NEXANEST_KAFKA__GROUP_INSTANCE_ID=app))
    await assert_exactly_once(timescale_pool, config.source, produced, isolated, config.start_ns)
    # The table's uniqueness rule would hide a re-read batch; the new consumer's own
    # count shows it resumed at the stored offsets, not at Kafka's older ones.
    (stopped,) = await timescale_pool.fetch(
        "SELECT details FROM system_events WHERE component = 'consumer.ticks_to_timescale'"
        " AND event_type = 'stopped' AND details->>'group' = $1",
        isolated.kafka.consumer_group,
    )
    counts = json.loads(stopped["details"])
    assert (counts["consumed"], counts["written"]) == (produced - rows, produced - rows)


async def test_repeated_kill_9_loses_and_doubles_nothing(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    # Enough that each consumer is still writing when it is killed: without the
    # unique index and with the cheaper decoding (issue 15) a 500-row batch
    # commits in a few ms: 150,000 ticks drained in three rounds, and 200,000 in 100-row
    # batches (more transactions per tick) in six.
    produced = 400_000
    config = feed_config(test_id, produced)
    assert await publish(isolated, config) == produced
    rng = random.Random(test_id)
    # Static membership: each restarted consumer takes the partitions straight
    # back instead of waiting out the killed one's session.
    member = {"NEXANEST_KAFKA__GROUP_INSTANCE_ID": f"kill9-{test_id}", "NEXANEST_BATCH__MAX_ROWS": "100"}
    kills = 0
    for _ in range(6):
        before = await rows_of(timescale_pool, config.source)
        if before == produced:
            break
        proc = start_consumer(isolated, member)

        async def progressing(before: int = before) -> bool:
            return await rows_of(timescale_pool, config.source) > before

        await until(progressing, "the restarted consumer writes")
        # Then a random moment mid-stream: where the kill lands is the test's input.
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        await asyncio.to_thread(proc.wait, 30)
    assert kills >= 4, "the consumer finished before it could be killed; produce more"
    assert 0 < await rows_of(timescale_pool, config.source) < produced
    await asyncio.to_thread(finish, start_consumer(isolated, member))
    await assert_exactly_once(timescale_pool, config.source, produced, isolated, config.start_ns)


# -- service restarts ---------------------------------------------------------------


#: What a consumer logs once an outage of each service has reached it: a write
#: retried, whichever sink met the outage first (TimescaleDB: the ticks, or an
#: after-commit sink such as market_indices; Redis: quotes, bar cache), or
#: aiokafka's own connection errors (Kafka: fetch, heartbeat, metadata).
OUTAGE_SEEN = {
    "timescaledb": re.compile(r"batch_retry\b.*service=timescaledb\b"),
    "redis": re.compile(r"batch_retry\b.*service=redis\b"),
    "kafka": re.compile(r"^aiokafka\S* (ERROR|WARNING) ", re.MULTILINE),
}


@pytest.mark.parametrize("service", ["timescaledb", "redis", "kafka"])
async def test_consumer_rides_out_a_service_restart(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str, service: str, tmp_path: Path
) -> None:
    """Ticks keep arriving while a service goes away and comes back: the consumer
    waits, retries with backoff and catches up by itself. The service is stopped
    while the consumer is writing, and the feed runs until the service is back
    (a feed of a fixed length could end while the service is still stopping,
    leaving an idle consumer that never meets the outage); the service stays
    down until the consumer has logged that the outage reached it."""
    if containers.wanted():
        pytest.skip("under testcontainers (Docker): it restarts services with deploy/local's scripts")
    config = feed_config(test_id, None, rate=3_000, paced=True)
    feed = SyntheticFeed(config)
    await ensure_topics(isolated.kafka)
    log = tmp_path / "consumer.log"
    consumer = start_consumer(isolated, until_idle_s=6.0, log=log, NEXANEST_RETRY__MAX_BACKOFF_S="1")
    producing = asyncio.create_task(publish_feed(isolated.kafka, feed, config.source))

    async def writing() -> bool:
        return await rows_of(timescale_pool, config.source) > 0

    await until(writing, "the consumer writes ticks")
    assert not producing.done(), "the feed ended before the outage"
    before = log.stat().st_size

    def logged() -> str:
        return log.read_bytes()[before:].decode(errors="replace")

    async def outage_seen() -> bool:
        return consumer.poll() is not None or OUTAGE_SEEN[service].search(logged()) is not None

    try:
        await asyncio.to_thread(service_script, service, "stop")
        try:
            await until(outage_seen, f"the consumer to notice that {service} is down")
        except pytest.fail.Exception:
            pytest.fail(
                f"the consumer never logged the {service} outage; it logged:\n{logged()[-3000:]}", pytrace=False
            )
        if consumer.poll() is not None:
            pytest.fail(f"the consumer exited ({consumer.returncode}) in the {service} outage:\n{logged()[-3000:]}")
    finally:
        # Started again even when stopping failed half-way: every later test needs it.
        await asyncio.to_thread(service_script, service, "start")
        await feed.stop()
    produced = await producing
    assert produced > 0
    await asyncio.to_thread(finish, consumer, 180, log)
    if service == "timescaledb":
        await timescale_pool.expire_connections()
    await assert_exactly_once(timescale_pool, config.source, produced, isolated, config.start_ns)
    if service in ("timescaledb", "redis"):
        # The outage is reported as events: batch_failed (in the table unless the
        # table itself was down) and batch_recovered once the write went through.
        recovered = await timescale_pool.fetchval(
            "SELECT count(*) FROM system_events WHERE event_type = 'batch_recovered' AND details->>'group' = $1",
            isolated.kafka.consumer_group,
        )
        assert recovered >= 1


# -- rebalances -----------------------------------------------------------------


async def test_consumers_joining_and_leaving_a_group_write_each_tick_once(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """While ticks arrive, a second and a third consumer join (the test waits until
    the group coordinator shows two, then three members each holding partitions,
    and until rows are written while three hold them); then one leaves cleanly and
    one is killed, while ticks still arrive (the feed runs until then, whatever the
    machine's load makes of the group's timing). Every tick is stored once."""
    config = feed_config(test_id, None, rate=3_000, paced=True)
    feed = SyntheticFeed(config)
    await ensure_topics(isolated.kafka)
    small_batches = {"NEXANEST_BATCH__MAX_ROWS": "500"}
    first = start_consumer(isolated, small_batches, until_idle_s=8.0)
    producing = asyncio.create_task(publish_feed(isolated.kafka, feed, config.source))

    async def holding(n: int) -> bool:
        held = await members_holding_partitions(isolated)
        return len(held) == n and all(held)

    async def written() -> int:
        return await rows_of(timescale_pool, config.source)

    await until(lambda: holding(1), "the first consumer holds every partition")
    second = start_consumer(isolated, small_batches, until_idle_s=6.0)
    await until(lambda: holding(2), "two consumers hold partitions")
    third = start_consumer(isolated, small_batches, until_idle_s=6.0)
    await until(lambda: holding(3), "three consumers hold partitions")
    three_held_at = await written()

    async def written_since_three() -> bool:
        return await written() > three_held_at

    await until(written_since_three, "rows written while three consumers hold partitions")
    assert not producing.done(), "the publisher stopped before the group changed"
    second.send_signal(signal.SIGTERM)  # leaves cleanly: finishes its batch and leaves the group
    await asyncio.to_thread(finish, second, 60)
    third.send_signal(signal.SIGKILL)  # vanishes; its partitions move after the session timeout
    assert await asyncio.to_thread(third.wait, 30) == -signal.SIGKILL
    killed_at = await written()

    async def written_since_kill() -> bool:
        return await written() > killed_at

    await until(written_since_kill, "rows written after a member was killed")
    await feed.stop()
    produced = await producing
    assert produced == feed.health().ticks > 0
    await asyncio.to_thread(finish, first, 180)
    # The killed member's partitions move once its session times out; a last
    # member drains whatever the first one had not been given by then.
    await asyncio.to_thread(finish, start_consumer(isolated))
    await assert_exactly_once(timescale_pool, config.source, produced, isolated, config.start_ns)


# -- poison input ---------------------------------------------------------------


def poison(rng: random.Random, good: bytes) -> bytes:
    """One malformed message of a random kind."""
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:
        return good[: rng.randrange(1, len(good))]  # truncated
    if kind == 2:
        return b"x" * rng.randrange(5_000, 20_000)  # oversized
    fields = msgspec.msgpack.decode(good)
    if kind == 3:
        fields["price_e9"] = rng.choice(["1.5", None, [], {"a": 1}])
    elif kind == 4:
        fields["price_e9"] = rng.choice([float("nan"), float("inf"), -float("inf"), 1.5])
    elif kind == 5:
        fields["size_e9"] = -rng.randrange(1, 10**12)
    elif kind == 6:
        fields["symbol"] = rng.choice(["", "lower", "A" * 200, "\x00\x01", "SP ACE"])
    else:
        fields.pop(rng.choice(["symbol", "price_e9", "ts_ns", "seq", "source"]))
    return msgspec.msgpack.encode(fields)


async def test_poison_burst_goes_to_the_dlq_and_good_ticks_are_written(
    isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    rng = random.Random(test_id)
    good_ticks = list(SyntheticFeed(feed_config(test_id, 5_000)).generate())
    encoded = [encode_tick(t) for t in good_ticks]
    bad_count = 10_000
    stream: list[tuple[bytes, bytes]] = [(t.symbol.encode(), e) for t, e in zip(good_ticks, encoded, strict=True)]
    for _ in range(bad_count):
        stream.insert(rng.randrange(len(stream) + 1), (b"POISON", poison(rng, rng.choice(encoded))))

    await ensure_topics(isolated.kafka)
    producer = make_producer(isolated.kafka)
    await producer.start()
    try:
        futures = [await producer.send(isolated.kafka.ticks_topic, value, key=key) for key, value in stream]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=3.0)
    assert stats.consumed == len(stream)
    assert stats.rejected == bad_count
    assert set(stats.rejected_by_reason) <= {"undecodable", "schema_violation", "oversized", "bad_size", "bad_symbol"}
    await assert_exactly_once(timescale_pool, good_ticks[0].source, len(good_ticks))

    dlq = AIOKafkaConsumer(
        isolated.kafka.dead_letter_topic,
        bootstrap_servers=isolated.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await dlq.start()
    try:
        topic = isolated.kafka.dead_letter_topic
        partitions = [TopicPartition(topic, p) for p in dlq.partitions_for_topic(topic) or ()]
        end = sum((await dlq.end_offsets(partitions)).values())
    finally:
        await dlq.stop()
    assert end == bad_count
