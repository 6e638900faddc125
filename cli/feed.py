"""``nexanest feed list`` and ``nexanest feed run NAME [adapter options]``.

The feeds are the ``nexanest.feeds`` entry points (``producers/feeds/registry.py``):
the built-ins and any installed user package alike. ``feed run`` parses in two
steps: ``NAME`` first, then the rest with the options that feed's plugin adds,
so each feed has its own ``--help``. A progress display reads the adapter's
health: a rich progress bar (rows, rate, ETA) on a terminal, a plain line every
few seconds otherwise. A CSV replay's total, and so its ETA, is estimated from
the bytes read (``ReplayFeed.total_rows``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from nexanest.cli.runtime import EXIT_OK, EXIT_USAGE, Commands
from nexanest.pipeline.settings import Settings

#: Seconds between plain progress lines (not a terminal).
PLAIN_EVERY_S = 5.0


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "feed",
        help="list the feed adapters, or run one (`feed run NAME --help` for its options)",
        description="Feed adapters publish ticks to Kafka. Built-in and user-installed adapters are the "
        "`nexanest.feeds` entry points (see README: your own feed adapter).",
    )
    sub = p.add_subparsers(dest="feed_command", required=True, metavar="SUBCOMMAND")
    ls = sub.add_parser("list", help="the registered feed adapters")
    ls.set_defaults(handler=cmd_feed_list)
    run = sub.add_parser(
        "run",
        help="run one feed adapter until it ends or Ctrl-C",
        description="Run feed NAME; its options follow the name (`nexanest feed run NAME --help`). "
        "Live feeds publish to kafka.ticks_topic, backfills (replay, synthetic history) to kafka.backfill_topic.",
    )
    run.add_argument("name", metavar="NAME", help="the feed (see `nexanest feed list`)")
    run.add_argument("options", nargs=argparse.REMAINDER, help="the feed's own options")
    run.set_defaults(handler=cmd_feed_run, metrics_component="producer")


async def cmd_feed_list(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from nexanest.producers.feeds import registry

    found = registry.available()
    if not found:
        print("no feed adapters registered (is nexanest installed?)")
        return EXIT_OK
    width = max(len(name) for name in found)
    for name, point in found.items():
        try:
            summary = registry.plugin_of(point).summary
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
            summary = f"(cannot load {point.value}: {exc!r})"
        print(f"{name:<{width}}  {summary}")
    return EXIT_OK


def feed_parser(name: str, plugin: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"nexanest feed run {name}", description=plugin.summary)
    parser.add_argument(
        "--topic", help="publish here instead (default: ticks topic for live feeds, backfill topic for history)"
    )
    parser.add_argument(
        "--live", action="store_true", help="publish history to the live ticks topic (stale ticks will be refused)"
    )
    plugin.add_arguments(parser)
    return parser


async def cmd_feed_run(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from nexanest.producers.feed_runner import run_feed, topic_of
    from nexanest.producers.feeds import registry

    try:
        plugin = registry.load(args.name)
    except registry.UnknownFeed as exc:
        print(f"nexanest feed run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = feed_parser(args.name, plugin).parse_args(args.options)
    try:
        adapter = plugin.create(options, settings)
    except ValueError as exc:
        print(f"nexanest feed run {args.name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    topic = options.topic or (settings.kafka.ticks_topic if options.live else topic_of(settings, adapter))
    print(f"feed {args.name} -> Kafka {topic}", file=sys.stderr, flush=True)
    started = time.monotonic()
    progress = asyncio.create_task(show_progress(adapter))
    try:
        published = await run_feed(settings, adapter, stop, topic=topic)
    finally:
        progress.cancel()
    elapsed = time.monotonic() - started
    health = adapter.health()
    print(
        f"published {published:,} ticks in {elapsed:.1f}s ({published / max(elapsed, 1e-9):,.0f}/s); "
        f"rejected {health.rejected:,}, reconnects {health.reconnects}, gaps {health.gaps}"
    )
    ts_range = getattr(adapter, "ts_range", None)
    if ts_range is not None and topic == settings.kafka.backfill_topic:
        low, high = ts_range
        print(
            f"backfilled tick time {_iso(low)} .. {_iso(high)}. Once the consumer has caught up, on the Timescale "
            f"edition refresh the continuous aggregates over it:\n  nexanest bars repair --from {_iso(low)} "
            f"--to {_iso(high + 1_000)}\nand check it: nexanest verify --topic {topic} --from {_iso(low)} "
            f"--to {_iso(high + 1_000)}"
        )
    return EXIT_OK


def _iso(ns: int) -> str:
    from nexanest.ops.times import format_ns

    return format_ns(ns)


def _done_and_total(adapter: Any) -> tuple[int, int | None, str]:
    """What to count: rows of a file replay (their total exact from Parquet,
    estimated from the bytes read for CSV: ``total_estimated``), else ticks."""
    rows = getattr(adapter, "rows_done", None)
    if rows is not None:
        return int(rows), getattr(adapter, "total_rows", None), "rows"
    return adapter.health().ticks, None, "ticks"


async def show_progress(adapter: Any) -> None:
    """Until cancelled: a rich bar on a terminal, plain lines otherwise (logs, CI)."""
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        done, total, unit = _done_and_total(adapter)
        columns = (
            TextColumn(f"[bold]{adapter.name}[/] {unit}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        last, last_at = done, time.monotonic()
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(unit, total=total, completed=done, rate="-")
            while True:
                await asyncio.sleep(0.5)
                done, total, _ = _done_and_total(adapter)
                now = time.monotonic()
                rate = (done - last) / max(now - last_at, 1e-9)
                last, last_at = done, now
                bar.update(task, completed=done, total=total, rate=f"{rate:,.0f}")
    last, last_at = _done_and_total(adapter)[0], time.monotonic()
    while True:
        await asyncio.sleep(PLAIN_EVERY_S)
        done, total, unit = _done_and_total(adapter)
        now = time.monotonic()
        rate = (done - last) / max(now - last_at, 1e-9)
        last, last_at = done, now
        eta = f", ETA {(total - done) / rate:,.0f}s" if total is not None and rate > 0 else ""
        about = "~" if getattr(adapter, "total_estimated", False) else ""
        of = f"/{about}{total:,}" if total is not None else ""
        health = adapter.health()
        print(
            f"... {adapter.name}: {done:,}{of} {unit} ({rate:,.0f}/s{eta}), rejected {health.rejected:,}",
            file=sys.stderr,
            flush=True,
        )
