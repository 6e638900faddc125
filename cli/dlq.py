"""``nexanest dlq inspect`` and ``nexanest dlq replay``: the dead-letter topic."""

from __future__ import annotations

import argparse
import asyncio
import json

from nexanest.cli.arguments import TIME_HELP, positive_int, time_arg
from nexanest.cli.runtime import EXIT_OK, Commands, stderr_line
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.validation import REASONS


def register(commands: Commands) -> None:
    p = commands.add_parser("dlq", help="inspect the dead-letter topic, or replay what now passes validation")
    actions = p.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    s = actions.add_parser(
        "inspect",
        help="dead letters counted by reason, with samples",
        description="Read the whole dead-letter topic (no consumer group) and count its records by reason.",
    )
    s.add_argument("--limit", type=positive_int, default=3, help="samples shown per reason (default 3)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(handler=cmd_dlq_inspect)

    s = actions.add_parser(
        "replay",
        help="re-publish dead letters that pass the current rules",
        description="Re-validate dead letters with the current validation settings; re-publish those that "
        "pass to the ticks topic (original key and bytes, header nexanest.replayed_from), report those that "
        "still fail. Progress is committed as consumer group kafka.dlq_replay_group, so a second run "
        "re-sends nothing.",
    )
    s.add_argument(
        "--reason",
        action="append",
        choices=REASONS,
        metavar="REASON",
        help=f"only dead letters rejected for this reason (repeatable; others stay for a later replay): "
        f"{', '.join(REASONS)}",
    )
    s.add_argument("--since", type=time_arg, metavar="T", help=f"pass over records rejected before T ({TIME_HELP})")
    s.add_argument("--dry-run", action="store_true", help="judge and report, send and commit nothing")
    s.add_argument("--limit", type=positive_int, default=20, help="still-failing records listed (default 20)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(handler=cmd_dlq_replay)


async def cmd_dlq_inspect(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.ops.dlq_inspect import format_inspect, inspect

    inspected = await inspect(settings, limit=args.limit, progress=stderr_line)
    print(json.dumps(inspected.to_json(), indent=2) if args.json else format_inspect(inspected))
    return EXIT_OK


async def cmd_dlq_replay(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.ops.dlq_replay import format_replay, replay

    replayed = await replay(
        settings,
        reasons=args.reason,
        since_ns=args.since,
        dry_run=args.dry_run,
        limit=args.limit,
        progress=stderr_line,
    )
    print(json.dumps(replayed.to_json(), indent=2) if args.json else format_replay(replayed))
    return EXIT_OK
