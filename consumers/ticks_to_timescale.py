"""The ticks consumer: ``ticks`` topic -> TimescaleDB ``stock_prices`` + Redis quotes.

Wiring only: it builds the clients from the settings, hands them to the sinks
and the loop, and reports its life cycle as system events.

Backfill (issue 14). Historical ticks (``nexanest feed run replay``) arrive on
their own topic, ``kafka.backfill_topic``, never on the live one. This process
reads it with a second ``IngestLoop``: its own Kafka consumer in its own group
(``<consumer_group>.backfill``), its own ``OffsetStore`` claims and offsets
(``ingest_offsets`` rows are per group, topic and partition, so the two loops
never fence each other), and ``TickValidator(stale=False)``: every rule but
``stale_timestamp``. So:

* a live feed that sends old data is still refused (``stale_timestamp`` on the
  ticks topic): only the backfill topic says "this is history";
* a backfill never delays live ticks: they are separate partitions, fetches
  and batches, written concurrently;
* the backfill's rows go through the same ``TimescaleSink``: exactly once by
  its offsets, re-sent ticks dropped by the backfill group's own high-water
  marks of ``seq`` (a resumed replay re-sends rows), and under the Apache edition the pipeline-maintained bars
  merged in the same transaction. Under the Timescale edition the continuous
  aggregates' refresh policies only cover recent windows: the backfilled range
  is refreshed explicitly with ``nexanest bars repair --from A --to B`` (the
  replay prints the command with its range when it ends);
* backfilled ticks do not move the live quotes in Redis nor the bar cache, and
  emit no lag events (a backfill is a large lag by design).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence

import asyncpg
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.events import BatchMonitor, EventEmitter
from nexanest.pipeline.kafka import ensure_topics, make_consumer, make_producer, start_client
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.quote_rebuild import rebuild_quotes
from nexanest.pipeline.rebalance import ResumeFromDatabase
from nexanest.pipeline.runner import IngestLoop, IngestStats
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.bar_cache import BarCacheSink
from nexanest.pipeline.sinks.dead_letter import DeadLetterSink
from nexanest.pipeline.sinks.indices import IndexSink
from nexanest.pipeline.sinks.ohlcv_mode import CaggWatermarks, resolutions_current_at_commit, resolve_rollups
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.events import EventType, Severity
from nexanest.schemas.ticks import Tick

COMPONENT = "consumer.ticks_to_timescale"
_log = get_logger(COMPONENT)


async def open_timescale_pool(settings: Settings) -> asyncpg.Pool:
    ts = settings.timescale
    try:
        pool = await asyncpg.create_pool(
            ts.dsn.get_secret_value(),
            min_size=ts.pool_min_size,
            max_size=ts.pool_max_size,
            command_timeout=ts.command_timeout_s,
            timeout=ts.connect_timeout_s,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(
            f"cannot connect to TimescaleDB ({type(exc).__name__}: {exc}); is it running (make db-status)?"
        ) from exc
    assert pool is not None  # noqa: S101 - create_pool only returns None when awaited lazily
    return pool


def open_quotes_redis(settings: Settings) -> redis.Redis:
    r = settings.redis
    return redis.Redis.from_url(
        r.url.get_secret_value(),
        db=r.db_quotes,
        socket_timeout=r.socket_timeout_s,
        socket_connect_timeout=r.socket_timeout_s,
    )


def open_analytics_redis(settings: Settings) -> redis.Redis:
    r = settings.redis
    return redis.Redis.from_url(
        r.url.get_secret_value(),
        db=r.db_analytics,
        socket_timeout=r.socket_timeout_s,
        socket_connect_timeout=r.socket_timeout_s,
    )


class _NoQuotes:
    """The backfill loop's quote sink (history must not overwrite live quotes),
    and the live loop's when the quote fast path alone writes them."""

    name = "backfill_quotes"

    def write(self, rows: Sequence[Tick]) -> None:
        return None

    async def flush(self) -> int:
        return 0

    async def close(self) -> None:
        return None


def backfill_group(settings: Settings) -> str:
    """The consumer group (and ``ingest_offsets`` group) of the backfill loop."""
    return f"{settings.kafka.consumer_group}.backfill"


def _backfill_loop(
    settings: Settings, pool: asyncpg.Pool, rollups: str, producer: AIOKafkaProducer
) -> tuple[IngestLoop, AIOKafkaConsumer]:
    """The loop over ``kafka.backfill_topic`` (module docstring: Backfill)."""
    kafka = settings.kafka
    group = backfill_group(settings)
    consumer = make_consumer(kafka, group_id=group)
    offsets = OffsetStore(pool, group) if settings.consumer.exactly_once else None
    listener = ResumeFromDatabase(consumer, offsets, kafka.backfill_topic, settings.retry) if offsets else None
    if listener is not None:
        consumer.subscribe([kafka.backfill_topic], listener=listener)
    else:
        consumer.subscribe([kafka.backfill_topic])
    loop = IngestLoop(
        consumer,
        validator=TickValidator(settings.validation, stale=False),
        timescale=TimescaleSink(pool, offsets, rollups=rollups == "pipeline"),
        offsets=offsets,
        quotes=_NoQuotes(),
        dead_letters=DeadLetterSink(producer, kafka.dead_letter_topic),
        batch=settings.batch,
        retry=settings.retry,
        listener=listener,
    )
    return loop, consumer


async def run_consumer(
    settings: Settings,
    stop: asyncio.Event,
    *,
    until_idle_s: float | None = None,
    validator: TickValidator | None = None,
    backfill: bool = True,
) -> IngestStats:
    """Run until ``stop`` is set or the topic has been idle for ``until_idle_s``.

    ``validator`` replaces the rules of ``settings.validation`` (tests use a
    decode-only one to drive values straight to the database). With
    ``backfill`` the backfill topic is consumed too, by a second loop (module
    docstring); the stats returned are the live loop's plus the backfill's."""
    kafka = settings.kafka
    await ensure_topics(kafka)
    pool = await open_timescale_pool(settings)
    try:
        rollups = await resolve_rollups(pool, settings.consumer.rollups)
        fresh_resolutions = await resolutions_current_at_commit(pool, rollups)
    except BaseException:
        await pool.close()
        raise
    quotes_redis = open_quotes_redis(settings)
    producer = make_producer(kafka, client_suffix="consumer-dlq")
    consumer = make_consumer(kafka)
    # Exactly once: the offsets are stored with the rows and claims fence stale
    # writers; off (benchmarks only), Kafka's committed offsets are the truth.
    offsets = OffsetStore(pool, kafka.consumer_group) if settings.consumer.exactly_once else None
    timescale = TimescaleSink(
        pool,
        offsets,
        rollups=rollups == "pipeline",
        fresh_resolutions=fresh_resolutions,
        watermarks=CaggWatermarks() if rollups == "native" else None,
    )
    quotes = RedisQuoteSink(quotes_redis, settings.redis.quote_key_prefix)
    indices = (
        IndexSink(
            pool,
            RedisQuoteSink(quotes_redis, settings.redis.quote_key_prefix, name="redis_index_quotes"),
            settings.indices,
            seed_window_s=settings.consumer.index_seed_window_s,
            refresh_s=settings.consumer.index_refresh_s,
        )
        if settings.indices
        else None
    )
    # The latest bars go to Redis only when this process keeps them (pipeline
    # rollups): they are the merged rows its own upserts return.
    analytics_redis = open_analytics_redis(settings) if rollups == "pipeline" else None
    bar_cache = (
        BarCacheSink(analytics_redis, timescale, settings.redis.bar_key_prefix) if analytics_redis is not None else None
    )
    listener = ResumeFromDatabase(consumer, offsets, kafka.ticks_topic, settings.retry) if offsets is not None else None
    if listener is not None:
        consumer.subscribe([kafka.ticks_topic], listener=listener)
    else:
        consumer.subscribe([kafka.ticks_topic])
    events = EventEmitter(COMPONENT, pool=pool, producer=producer, topic=kafka.events_topic)
    history, history_consumer = _backfill_loop(settings, pool, rollups, producer) if backfill else (None, None)
    loop = IngestLoop(
        consumer,
        validator=validator or TickValidator(settings.validation),
        timescale=timescale,
        offsets=offsets,
        # Off only when the quote fast path alone keeps quotes (settings: consumer.inline_quotes).
        quotes=quotes if settings.consumer.inline_quotes else _NoQuotes(),
        dead_letters=DeadLetterSink(producer, kafka.dead_letter_topic),
        batch=settings.batch,
        retry=settings.retry,
        listener=listener,
        after_commit=[s for s in (indices, bar_cache) if s is not None],
        monitor=BatchMonitor(events, settings.events, topic=kafka.ticks_topic, group=kafka.consumer_group),
    )
    try:
        await start_client(producer, kafka)
        rebuilt = await rebuild_quotes(pool, quotes, settings.consumer.quote_rebuild_window_s)
        index_prices = await indices.seed() if indices is not None else 0
        await start_client(consumer, kafka)
        if history_consumer is not None:
            await start_client(history_consumer, kafka)
        # What start-up allocated (modules, clients, caches) lives as long as the
        # process: frozen, a full collection no longer walks it, which cut the
        # consumer's longest pauses (35-40 ms gen-2 collections) that delay quotes.
        gc.collect()
        gc.freeze()
        await events.emit(
            EventType.STARTED,
            f"consuming {kafka.ticks_topic} as group {kafka.consumer_group}",
            topic=kafka.ticks_topic,
            group=kafka.consumer_group,
            quotes_rebuilt=rebuilt,
            rollups=rollups,
            indices=len(settings.indices),
            index_prices_seeded=index_prices,
        )
        _log.info(
            "consumer_started",
            topic=kafka.ticks_topic,
            group=kafka.consumer_group,
            quotes_rebuilt=rebuilt,
            rollups=rollups,
        )
        if history is None:
            stats = await loop.run(stop, until_idle_s=until_idle_s)
        else:
            stats, backfilled = await asyncio.gather(
                loop.run(stop, until_idle_s=until_idle_s), history.run(stop, until_idle_s=until_idle_s)
            )
            _add_stats(stats, backfilled)
    except Exception as exc:
        await events.emit(
            EventType.ERROR,
            f"consumer failed: {exc!r}",
            Severity.ERROR,
            topic=kafka.ticks_topic,
            group=kafka.consumer_group,
        )
        raise
    else:
        await events.emit(
            EventType.STOPPED,
            "consumer stopped cleanly",
            topic=kafka.ticks_topic,
            group=kafka.consumer_group,
            consumed=stats.consumed,
            written=stats.written,
            rejected=stats.rejected,
        )
        _log.info("consumer_stopped", consumed=stats.consumed, written=stats.written, rejected=stats.rejected)
        return stats
    finally:
        await consumer.stop()
        if history_consumer is not None:
            await history_consumer.stop()
        await producer.stop()
        await quotes_redis.aclose()
        if analytics_redis is not None:
            await analytics_redis.aclose()
        await pool.close()


def _add_stats(total: IngestStats, more: IngestStats) -> None:
    """Fold the backfill loop's counts into the live loop's."""
    for name in ("batches", "consumed", "written", "rejected", "retries", "fenced", "duplicates"):
        setattr(total, name, getattr(total, name) + getattr(more, name))
    for reason, count in more.rejected_by_reason.items():
        total.rejected_by_reason[reason] = total.rejected_by_reason.get(reason, 0) + count
