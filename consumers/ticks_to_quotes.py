"""The quote fast path: ``ticks`` topic -> Redis quotes, and nothing else.

``nexanest consume`` takes, validates and quotes each fetch in the same thread
that encodes the previous batch's COPY and runs its transaction's client side:
a quote waits behind that work (tens of ms a batch at 20k ticks/s, more under
a backlog). This process does only the quote's part: small fetches (at most
``quotes.max_records``), decode and validate with the consumer's own rules,
one Redis round trip of the latest tick per symbol (``RedisQuoteSink``: only
forward in tick time, PUBLISHed to the symbol's channel). It runs in its own
process and consumer group (``<consumer_group><quotes.group_suffix>``), so it
sees every tick the consumer sees and shares no CPU time slice with it.

What it leaves to ``nexanest consume``:

* **dead letters**: a tick it finds invalid it only skips (counted in
  ``nexanest_quotes_skipped_total``); the consumer dead-letters it, once, with
  its offsets, as ever. Two processes sending the same letter would double it.
* **the table, and the quote never behind it**: by default the consumer keeps
  writing quotes too (``consumer.inline_quotes``), before each batch's rows.
  The two writers are idempotent together, since the script only moves a quote
  forward in tick time, and whichever applies a tick first publishes it and
  observes its latency. If this process stops or lags, quotes fall back to the
  consumer's pace, never behind the table.
* **exactly once**: nothing here is durable but the quote, and re-applying a
  tick is a no-op, so its offsets are auto-committed to Kafka only to resume
  near where it stopped; a new group starts at the end of the topic (the
  consumer's start-up rebuild covers what came before).
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from nexanest.consumers.ticks_to_timescale import open_quotes_redis
from nexanest.pipeline import metrics
from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.kafka import consumer_options, ensure_topics
from nexanest.pipeline.log import get_logger
from nexanest.pipeline.retry import Backoff
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.pipeline.validation import TickValidator
from nexanest.schemas.ticks import Tick

COMPONENT = "consumer.ticks_to_quotes"
_log = get_logger(COMPONENT)


@dataclass
class QuoteStats:
    consumed: int = 0
    quoted: int = 0  # valid ticks handed to Redis (the latest per symbol of each fetch is written)
    skipped: int = 0  # invalid ticks, left to the consumer's dead-letter topic
    retries: int = 0


def quotes_group(settings: Settings) -> str:
    """The consumer group of the fast path."""
    return f"{settings.kafka.consumer_group}{settings.quotes.group_suffix}"


def make_quotes_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A consumer tuned for latency: short broker waits, offsets auto-committed
    (the quote is idempotent), starting at the end of the topic when new."""
    kafka = settings.kafka
    options = consumer_options(kafka, "quotes") | {
        "enable_auto_commit": True,
        "auto_offset_reset": "latest",
        "fetch_max_wait_ms": settings.quotes.fetch_max_wait_ms,
    }
    return AIOKafkaConsumer(
        group_id=quotes_group(settings),
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        **options,
    )


class _Positioned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Resolves the position of each partition as it is assigned (a new group's
    "latest" is then fixed before anything else happens), then sets ``ready``:
    every tick published after that is quoted."""

    def __init__(self, consumer: AIOKafkaConsumer, ready: asyncio.Event | None) -> None:
        self._consumer = consumer
        self._ready = ready

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            await self._consumer.position(tp)
        if self._ready is not None and assigned:
            self._ready.set()


async def run_quotes(
    settings: Settings,
    stop: asyncio.Event,
    *,
    until_idle_s: float | None = None,
    ready: asyncio.Event | None = None,
) -> QuoteStats:
    """Quote every tick of the ticks topic until ``stop`` is set (or nothing
    arrives for ``until_idle_s``). ``ready`` is set once partitions are assigned
    and positioned: ticks published from then on are quoted."""
    await ensure_topics(settings.kafka)
    client = open_quotes_redis(settings)
    consumer = make_quotes_consumer(settings)
    consumer.subscribe([settings.kafka.ticks_topic], listener=_Positioned(consumer, ready))
    quotes = RedisQuoteSink(client, settings.redis.quote_key_prefix)
    check = TickValidator(settings.validation).check
    skipped = metrics.QUOTES_SKIPPED
    stats = QuoteStats()
    try:
        await consumer.start()
        gc.collect()
        gc.freeze()  # as the consumer: start-up's objects out of the collector's way (its pauses delay quotes)
        _log.info("quotes_started", topic=settings.kafka.ticks_topic, group=quotes_group(settings))
        idle_since = time.monotonic()
        max_records = settings.quotes.max_records
        while not stop.is_set():
            records = await consumer.getmany(timeout_ms=100, max_records=max_records)
            if not records:
                if until_idle_s is not None and time.monotonic() - idle_since >= until_idle_s:
                    break
                continue
            idle_since = time.monotonic()
            now_ns = time.time_ns()
            fresh: list[Tick] = []
            for messages in records.values():
                stats.consumed += len(messages)
                for msg in messages:
                    result = check(msg.value, now_ns)
                    if isinstance(result, Tick):
                        fresh.append(result)
                    else:
                        stats.skipped += 1
                        skipped.inc()
            if fresh:
                quotes.write(fresh)
                stats.retries += await _flush(quotes, settings, stop)
                stats.quoted += len(fresh)
    finally:
        await consumer.stop()
        await client.aclose()
    _log.info("quotes_stopped", consumed=stats.consumed, quoted=stats.quoted, skipped=stats.skipped)
    return stats


async def _flush(quotes: RedisQuoteSink, settings: Settings, stop: asyncio.Event) -> int:
    """One Redis round trip, retried while Redis is away (until a stop: the
    quotes in hand are then dropped, the consumer's own or the next run's fix
    them). Returns the retries."""
    backoff = Backoff(settings.retry)
    while True:
        try:
            await quotes.flush()
        except RetryableError as exc:
            metrics.count_retry(exc.service)
            if stop.is_set():
                quotes.discard()
                return backoff.attempts
            _log.warning("quotes_retry", error=str(exc))
            await backoff.wait()
        else:
            return backoff.attempts
