"""``nexanest events``: the system events, oldest first, optionally followed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from nexanest.cli.arguments import TIME_HELP, non_negative_float, positive_int, since_arg
from nexanest.cli.runtime import EXIT_OK, Commands
from nexanest.pipeline.settings import Settings


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "events",
        help="print the system events (life cycle and trouble of every component), oldest first",
        description="Read system_events (as the ingest role): the newest --limit events since --since, "
        "oldest first; with --follow, keep printing new ones until Ctrl-C.",
    )
    p.add_argument(
        "--since",
        type=since_arg,
        default="1h",
        metavar="T",
        help=f"start (default 1h, i.e. an hour ago; a bare duration means that long ago; or {TIME_HELP})",
    )
    p.add_argument("--component", help="only this component and its sub-components (consumer, producer.synthetic)")
    p.add_argument(
        "--severity",
        choices=["debug", "info", "warning", "error", "critical"],
        default="debug",
        help="only this severity and worse (default: all)",
    )
    p.add_argument("--limit", type=positive_int, default=200, help="at most this many of the newest (default 200)")
    p.add_argument("--follow", "-f", action="store_true", help="keep polling for new events (Ctrl-C stops)")
    p.add_argument("--interval", type=non_negative_float, default=1.0, help="--follow poll interval in s (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=cmd_events)


async def cmd_events(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from nexanest.ops import events_tail as events
    from nexanest.pipeline.db import ns_to_datetime
    from nexanest.schemas.events import Severity

    def out(event: dict[str, Any]) -> None:
        print(events.event_json(event) if args.json else events.format_event(event), flush=True)

    shown = await events.tail_events(
        settings,
        out,
        since=ns_to_datetime(args.since),
        component=args.component,
        minimum=Severity(args.severity),
        limit=args.limit,
        follow=args.follow,
        interval_s=max(args.interval, 0.1),
        stop=stop,
    )
    if not shown and not args.follow:
        print("no events match", file=sys.stderr)
    return EXIT_OK
