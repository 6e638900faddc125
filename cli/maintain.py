"""``nexanest maintain``: data retention, once or every D."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from nexanest.cli.arguments import duration_arg
from nexanest.cli.runtime import EXIT_ERROR, EXIT_OK, Commands
from nexanest.pipeline.errors import PipelineError
from nexanest.pipeline.settings import Settings


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "maintain",
        help="enforce data retention: drop old chunks (Apache edition) or set native policies (community)",
        description="Retention per settings.retention (NEXANEST_RETENTION__*: raw ticks 30 days, 1m bars 365, "
        "coarser bars forever, system events 90, market indices 365; 0 = forever). Apache edition: drop whole "
        "chunks older than that, as the owner role. Community edition: make the native retention, compression "
        "and continuous-aggregate refresh policies match. A real run is recorded as a system event.",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be dropped or changed, change nothing")
    p.add_argument(
        "--every",
        type=duration_arg,
        metavar="D",
        help="run again every D (e.g. 1h, 30m) until Ctrl-C, instead of once",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_maintain)


async def cmd_maintain(settings: Settings, args: argparse.Namespace, stop: asyncio.Event) -> int:
    import asyncpg

    from nexanest.ops import maintain

    while True:
        try:
            report = await maintain.maintain(settings, dry_run=args.dry_run)
        except (PipelineError, OSError, asyncpg.PostgresError) as exc:
            # The database's message (and SQLSTATE) is what an operator can act on; a
            # traceback through asyncpg is not. The pass was one transaction: nothing changed.
            sqlstate = getattr(exc, "sqlstate", None)
            reason = f"{exc} (SQLSTATE {sqlstate})" if sqlstate else str(exc)
            if args.every is None:
                print(f"nexanest maintain failed, nothing changed: {reason}", file=sys.stderr, flush=True)
                return EXIT_ERROR
            print(f"nexanest maintain failed (next try in {args.every:g}s): {reason}", file=sys.stderr, flush=True)
        else:
            print(json.dumps(report.to_json()) if args.json else maintain.format_report(report), flush=True)
        if args.every is None:
            return EXIT_OK
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.every)
        if stop.is_set():
            return EXIT_OK
