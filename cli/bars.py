"""``nexanest bars show SYMBOL`` and ``nexanest bars repair``: OHLCV bars.

Two subcommands rather than one positional that is either a symbol or the word
``repair``, so that every symbol, ``repair`` included, can be shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from nexanest.cli.arguments import add_time_range
from nexanest.cli.runtime import EXIT_OK, EXIT_USAGE, Commands
from nexanest.pipeline.settings import Settings

INTERVALS = ["1m", "5m", "1h", "1d"]


def register(commands: Commands) -> None:
    p = commands.add_parser(
        "bars",
        help="print OHLCV bars of a symbol, or repair bars from the raw ticks",
        description="OHLCV bars from the views ohlcv_1m/5m/1h/1d (the same on both TimescaleDB editions).",
    )
    actions = p.add_subparsers(dest="bars_action", required=True, metavar="ACTION")
    s = actions.add_parser(
        "show",
        help="the bars of a symbol whose bucket overlaps [FROM, TO)",
        description="The bars (open, high, low, close, volume, trades, VWAP) of SYMBOL whose bucket overlaps "
        "[FROM, TO), from the view of the interval.",
    )
    s.add_argument("symbol", metavar="SYMBOL")
    s.add_argument("--interval", choices=INTERVALS, default="1m", help="bar width (default 1m)")
    add_time_range(s)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(handler=cmd_bars_show)

    s = actions.add_parser(
        "repair",
        help="recompute the bars of [FROM, TO) from stock_prices",
        description="Recompute every bar of [FROM, TO), widened to whole UTC days, from stock_prices, as the "
        "owner role (Apache edition: rollup tables, one transaction per day; community edition: refresh of "
        "the continuous aggregates). Recorded as an aggregate_repaired system event.",
    )
    add_time_range(s)
    s.add_argument("--symbol", help="only this symbol (default: all)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    s.set_defaults(handler=cmd_bars_repair)


def _range_error(args: argparse.Namespace) -> bool:
    if args.from_ns >= args.to_ns:
        print(f"nexanest bars {args.bars_action}: --from is not before --to", file=sys.stderr)
        return True
    return False


async def cmd_bars_show(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.ops import bars

    if _range_error(args):
        return EXIT_USAGE
    rows = await bars.read_bars(settings, args.symbol, args.interval, args.from_ns, args.to_ns)
    if args.json:
        print(json.dumps([r.to_json() for r in rows]))
    elif rows:
        print(bars.format_bars(rows, args.interval))
    else:
        print(f"no {args.interval} bars for {args.symbol!r} in that range", file=sys.stderr)
    return EXIT_OK


async def cmd_bars_repair(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.ops import bars

    if _range_error(args):
        return EXIT_USAGE
    report = await bars.repair_bars(settings, args.from_ns, args.to_ns, args.symbol)
    print(json.dumps(bars.repair_json(report)) if args.json else bars.format_repair(report))
    return EXIT_OK
