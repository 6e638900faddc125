"""``nexanest verify``: does TimescaleDB hold every tick Kafka holds, exactly once?"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from nexanest.cli.arguments import add_time_range
from nexanest.cli.runtime import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Commands, stderr_line
from nexanest.pipeline.settings import Settings


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "verify",
        help="check that TimescaleDB holds every tick Kafka holds in a time window, exactly once",
        description="Compare the ticks topic with stock_prices for ticks whose ts_ns is in [FROM, TO): "
        "missing, duplicated and unexpected ticks by (source, seq), counts and price sums per partition "
        "and symbol. Exit status 0 when nothing is missing or duplicated, 1 otherwise.",
    )
    p.add_argument("--topic", help="the ticks topic (default: settings kafka.ticks_topic)")
    add_time_range(p)
    p.add_argument("--source", help="only this feed source (default: every source seen in Kafka)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--all", action="store_true", help="list every symbol, not only those that differ")
    p.set_defaults(handler=cmd_verify)


async def cmd_verify(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.ops.times import format_ns
    from nexanest.ops.verify import verify
    from nexanest.ops.verify_report import format_report

    if args.from_ns >= args.to_ns:
        print(
            f"nexanest verify: --from {format_ns(args.from_ns)} is not before --to {format_ns(args.to_ns)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    topic = args.topic or settings.kafka.ticks_topic
    report = await verify(settings, topic, args.from_ns, args.to_ns, args.source, progress=stderr_line)
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report, all_symbols=args.all))
    return EXIT_OK if report.ok else EXIT_ERROR
