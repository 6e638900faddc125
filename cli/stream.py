"""``nexanest produce``, ``consume`` and ``run``: the pipeline itself.

``run`` is the one place where a producer and the consumer share a process,
with the live view on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from nexanest.cli.arguments import non_negative_float, positive_int, source_tag
from nexanest.cli.runtime import EXIT_OK, EXIT_USAGE, Commands
from nexanest.pipeline.settings import MetricsComponent, MetricsSettings, Settings
from nexanest.producers.feeds.synthetic import interval_ns

if TYPE_CHECKING:
    from nexanest.cli.live_view import Quote
    from nexanest.producers.feeds.synthetic import SyntheticConfig

PRODUCER_COMPONENT = "producer.synthetic"

#: Symbols whose quotes the live view of ``run`` shows: enough to see prices move, few enough to fit.
QUOTES_SHOWN = 5


def register(commands: Commands) -> None:
    p = commands.add_parser("produce", help="publish ticks from a feed adapter to Kafka")
    feeds = p.add_subparsers(dest="feed", required=True, metavar="FEED")
    s = feeds.add_parser(
        "synthetic",
        help="geometric Brownian motion ticks, deterministic for a seed",
        description="Publish synthetic ticks (GBM prices, bid/ask, sizes), keyed by symbol. "
        + _metrics_note("producer"),
    )
    _add_synthetic_args(s, default_rate=1000.0)
    s.add_argument("--count", type=positive_int, help="stop after this many ticks")
    s.add_argument("--duration", type=non_negative_float, help="stop after this many seconds")
    s.add_argument("--start-ns", type=int, help="tick time of the first tick, ns since the epoch (default: now)")
    s.set_defaults(handler=cmd_produce, metrics_component="producer")

    p = commands.add_parser(
        "consume",
        help="ingest the ticks topic into TimescaleDB and Redis",
        description="Ingest the ticks topic: rows to TimescaleDB (exactly once), latest quotes to Redis, bad "
        "messages to the dead-letter topic. " + _metrics_note("consumer"),
    )
    _add_until_idle(p)
    p.set_defaults(handler=cmd_consume, metrics_component="consumer")

    q = commands.add_parser(
        "quotes",
        help="the quote fast path: ticks topic -> Redis quotes only, beside `consume`",
        description="Keep the latest quote of each symbol in Redis from the ticks topic, in a process and consumer "
        "group of its own, so that quotes never wait behind the consumer's database work. Invalid ticks are "
        "skipped here (`consume` dead-letters them). Run it beside `nexanest consume`. " + _metrics_note("quotes"),
    )
    _add_until_idle(q)
    q.set_defaults(handler=cmd_quotes, metrics_component="quotes")

    p = commands.add_parser(
        "run",
        help="run a synthetic producer and the consumer together, with a live view",
        description="A synthetic producer and the consumer in one process. On a terminal, a table redrawn "
        "in place: ticks/s in and out, rows written, dead-lettered, lag, tick-to-quote latency and the latest "
        "quotes of a few symbols; otherwise one plain line per second. " + _metrics_note("run"),
    )
    _add_synthetic_args(p, default_rate=2000.0)
    p.add_argument("--duration", type=non_negative_float, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(handler=cmd_run, metrics_component="run")


def _metrics_note(component: MetricsComponent) -> str:
    port = MetricsSettings().port_for(component)  # the default of the map
    return (
        f"Prometheus metrics on 127.0.0.1:{port}/metrics (NEXANEST_METRICS__{component.upper()}_PORT moves them, "
        "0 turns them off), a port of its own so that produce, consume and run can run side by side."
    )


def _add_synthetic_args(p: argparse.ArgumentParser, *, default_rate: float) -> None:
    p.add_argument("--symbols", type=positive_int, default=50, help="number of symbols (default 50)")
    p.add_argument(
        "--rate",
        type=non_negative_float,
        default=default_rate,
        help=f"ticks per second, 0 = as fast as possible (default {default_rate:g})",
    )
    p.add_argument("--seed", type=int, default=42, help="random seed; same seed, same ticks (default 42)")
    p.add_argument(
        "--tick-interval",
        type=interval_ns,
        default=None,
        help="tick time between ticks, e.g. 1s or 250ms (default 1/rate); a run that would reach the future is "
        "refused (history: `nexanest feed run synthetic --end-now`)",
    )
    p.add_argument(
        "--source",
        type=source_tag,
        default=None,
        help="the source tag stored with every tick; (source, seq) names a tick, so by default each run gets "
        "its own, synthetic-<UTC start time>-<4 hex> (printed at start; `nexanest verify --source` takes it); "
        "a given tag may be reused: seq then starts at the clock's ns, past any earlier run's",
    )


def synthetic_config(args: argparse.Namespace, *, paced: bool = True) -> SyntheticConfig:
    from nexanest.producers.feeds.synthetic import SyntheticConfig, run_identity

    source, seq_start = run_identity(args.source)
    return SyntheticConfig(
        symbols=args.symbols,
        rate=args.rate,
        count=getattr(args, "count", None),
        duration_s=getattr(args, "duration", None),
        seed=args.seed,
        start_ns=getattr(args, "start_ns", None),
        source=source,
        paced=paced,
        tick_interval_ns=args.tick_interval,
        seq_start=seq_start,
    )


def live_config(settings: Settings, args: argparse.Namespace) -> SyntheticConfig | None:
    """``synthetic_config`` for the live ticks topic, or None (the reason printed)
    when the consumer would refuse the run's ticks for their time: history
    belongs to `feed run synthetic` and the backfill topic."""
    from nexanest.producers.feeds.synthetic import check_tick_times

    config = synthetic_config(args)
    v = settings.validation
    try:
        check_tick_times(config, time.time_ns(), max_future_s=v.max_future_s, max_past_s=v.max_past_s)
    except ValueError as exc:
        print(f"nexanest {args.command}: {exc}", file=sys.stderr)
        return None
    return config


async def produce(settings: Settings, config: SyntheticConfig, stop: asyncio.Event) -> int:
    """Publish the feed until it ends or ``stop`` is set, reporting started/stopped
    (or error) as system events; returns the number of ticks Kafka acknowledged."""
    from nexanest.pipeline.events import open_event_emitter
    from nexanest.pipeline.kafka import ensure_topics, make_producer, start_client
    from nexanest.producers.feeds.synthetic import SyntheticFeed
    from nexanest.producers.publisher import TickPublisher
    from nexanest.schemas.events import EventType, Severity

    await ensure_topics(settings.kafka)
    feed = SyntheticFeed(config)
    producer = make_producer(settings.kafka)
    await start_client(producer, settings.kafka)
    events = await open_event_emitter(settings, PRODUCER_COMPONENT, producer)
    topic, started = settings.kafka.ticks_topic, time.monotonic()
    try:
        publisher = TickPublisher(producer, topic, config.source, new_producer=lambda: make_producer(settings.kafka))
        await events.emit(
            EventType.STARTED,
            f"publishing synthetic ticks to {topic} as source {config.source}",
            topic=topic,
            source=config.source,
            symbols=config.symbols,
            rate=config.rate,
        )
        try:
            published = await publisher.publish_all(feed.ticks(), stop)
        except Exception as exc:
            await events.emit(
                EventType.ERROR,
                f"producer failed: {exc!r}",
                Severity.ERROR,
                topic=topic,
                source=config.source,
                published=publisher.published,
            )
            raise
        elapsed = time.monotonic() - started
        await events.emit(
            EventType.STOPPED,
            f"published {published} ticks in {elapsed:.1f}s",
            topic=topic,
            source=config.source,
            published=published,
            elapsed_s=round(elapsed, 3),
        )
        return published
    finally:
        await events.close()
        await producer.stop()


async def cmd_produce(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    config = live_config(settings, args)
    if config is None:
        return EXIT_USAGE
    print(f"source {config.source}", file=sys.stderr, flush=True)
    started = time.monotonic()
    progress = asyncio.create_task(_progress(stop, "published", "nexanest_producer_ticks_total"))
    try:
        published = await produce(settings, config, stop)
    finally:
        progress.cancel()
    elapsed = time.monotonic() - started
    print(f"published {published:,} ticks in {elapsed:.1f}s ({published / max(elapsed, 1e-9):,.0f}/s)")
    return EXIT_OK


async def cmd_consume(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from nexanest.consumers.ticks_to_timescale import run_consumer

    progress = asyncio.create_task(_progress(stop, "written", "nexanest_sink_rows_written_total", sink="timescale"))
    try:
        stats = await run_consumer(settings, stop, until_idle_s=args.until_idle)
    finally:
        progress.cancel()
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(stats.rejected_by_reason.items())) or "none"
    print(
        f"consumed {stats.consumed:,} messages in {stats.batches:,} batches: "
        f"{stats.written:,} rows written, {stats.rejected:,} dead-lettered ({reasons}), {stats.retries} retries"
    )
    return EXIT_OK


async def cmd_quotes(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from nexanest.consumers.ticks_to_quotes import run_quotes

    stats = await run_quotes(settings, stop, until_idle_s=args.until_idle)
    print(f"consumed {stats.consumed:,} messages: {stats.quoted:,} quoted, {stats.skipped:,} invalid skipped")
    return EXIT_OK


async def cmd_run(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from nexanest.cli import live_view
    from nexanest.consumers.ticks_to_timescale import open_quotes_redis, run_consumer
    from nexanest.pipeline.sinks.redis_quotes import read_quote
    from nexanest.producers.feeds.synthetic import symbol_names

    config = live_config(settings, args)
    if config is None:
        return EXIT_USAGE
    print(
        f"running: synthetic feed ({args.symbols} symbols, {args.rate:g} ticks/s, source {config.source}) -> Kafka "
        f"{settings.kafka.ticks_topic} -> TimescaleDB stock_prices + Redis quotes. Ctrl-C to stop.",
        flush=True,
    )
    quotes_client = open_quotes_redis(settings)
    shown: Sequence[str] = symbol_names(args.symbols)[:QUOTES_SHOWN]

    async def latest_quotes() -> list[Quote]:
        prefix = settings.redis.quote_key_prefix
        found = await asyncio.gather(*(read_quote(quotes_client, s, prefix) for s in shown))
        return list(zip(shown, found, strict=True))

    async def stop_after_duration() -> None:
        if args.duration is not None:
            await asyncio.sleep(args.duration)
            stop.set()

    view = asyncio.create_task(live_view.show(stop, quotes=latest_quotes))
    timer = asyncio.create_task(stop_after_duration())
    producing = asyncio.create_task(produce(settings, config, stop))
    try:
        stats = await run_consumer(settings, stop)
        await producing
    finally:
        timer.cancel()
        stop.set()
        await view
        await quotes_client.aclose()
    print(f"stopped: {stats.written:,} rows written, {stats.rejected:,} dead-lettered")
    return EXIT_OK


async def _progress(stop: asyncio.Event, what: str, metric: str, **labels: str) -> None:
    """A progress line on stderr every few seconds, for long produce/consume runs."""
    from nexanest.cli.live_view import total

    last, last_at = 0.0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(2.0)
        now, now_at = total(metric, **labels), time.monotonic()
        print(f"... {what} {now:,.0f} ({(now - last) / (now_at - last_at):,.0f}/s)", file=sys.stderr, flush=True)
        last, last_at = now, now_at


def _add_until_idle(parser: argparse.ArgumentParser) -> None:
    """The stop condition `consume` and `quotes` share (tests and benchmarks drain a backlog with it)."""
    parser.add_argument(
        "--until-idle",
        type=non_negative_float,
        metavar="S",
        help="exit once no message has arrived for S seconds (default: run until Ctrl-C)",
    )
