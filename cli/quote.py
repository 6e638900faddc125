"""``nexanest quote SYMBOL``: the latest quote of a symbol, as Redis holds it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from nexanest.cli.runtime import EXIT_ERROR, EXIT_OK, Commands
from nexanest.pipeline.settings import Settings


def register(commands: Commands) -> None:
    p = commands.add_parser("quote", help="print the latest quote of a symbol from Redis")
    p.add_argument("symbol")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=cmd_quote)


async def cmd_quote(settings: Settings, args: argparse.Namespace, _stop: asyncio.Event) -> int:
    from nexanest.consumers.ticks_to_timescale import open_quotes_redis
    from nexanest.pipeline.sinks.redis_quotes import read_quote

    client = open_quotes_redis(settings)
    try:
        quote = await read_quote(client, args.symbol, settings.redis.quote_key_prefix)
    finally:
        await client.aclose()
    if not quote:
        print(f"no quote for {args.symbol!r}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps({"symbol": args.symbol, **quote}))
    else:
        age_s = (time.time_ns() - int(quote.get("ts_ns", "0"))) / 1e9
        print(f"symbol     {args.symbol}")
        for key in ("price", "bid", "ask", "size", "exchange", "ts_ns", "seq", "updated_ns"):
            print(f"{key:<10} {quote.get(key, '')}")
        print(f"age        {age_s:.3f}s")
    return EXIT_OK
