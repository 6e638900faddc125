"""What publishing quote updates costs the consumer: ``RedisQuoteSink.flush`` with and without.

    python -m benchmarks.micro.quote_publish [--symbols 300] [--flushes 2000] [--baseline-ref REF]

Each flush moves every one of ``--symbols`` quotes in one Lua call, as a batch
at saturation does. Variants take turns flush by flush, each on keys of its
own: ``script@REF`` (the quote script at that git revision: the "before"),
``no_publish``, ``publish_unfollowed`` (nobody subscribed) and
``publish_followed`` (a ``redis-cli`` subscriber on every symbol's channel, as
the market data service's hub; it must still be subscribed at the end, or the
fan-out was skipped). Reported: median and p99 flush time, and the ratios.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import shutil
import statistics
import subprocess
import time
from typing import Any
from urllib.parse import urlsplit

from benchmarks.harness.run import Run, main, rotated
from benchmarks.harness.sampling import ROOT
from nexanest.consumers.ticks_to_timescale import open_quotes_redis
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink, quote_channel
from nexanest.schemas.ticks import Tick


def script_at(ref: str) -> str:
    """The ``_APPLY_QUOTES`` script of ``pipeline/sinks/redis_quotes.py`` at git revision ``ref``."""
    argv = ["git", "show", f"{ref}:pipeline/sinks/redis_quotes.py"]
    source = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "_APPLY_QUOTES":
            return str(ast.literal_eval(node.value)) if node.value else ""
    raise SystemExit(f"no _APPLY_QUOTES in pipeline/sinks/redis_quotes.py at {ref}")


def ticks_for(symbols: int, step: int) -> list[Tick]:
    """One tick per symbol, each later than the previous step's, so every quote moves."""
    fixed: dict[str, Any] = {"exchange": "XBEN", "size_e9": 10**11, "source": "bench", "seq": step}
    prices = {f"B{i:04d}": (100 + i) * 10**9 + step for i in range(symbols)}
    ts = (1_800_000_000 + step) * 10**9
    return [
        Tick(symbol=s, price_e9=p, bid_e9=p - 10**7, ask_e9=p + 10**7, ts_ns=ts, **fixed) for s, p in prices.items()
    ]


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    client = open_quotes_redis(run.base)
    variants = [f"script@{args.baseline_ref}"] if args.baseline_ref else []
    variants += ["no_publish", "publish_unfollowed", "publish_followed"]
    prefix = {v: f"bench:{run.run_id}:{n}:quote:" for n, v in enumerate(variants)}
    sinks = {v: RedisQuoteSink(client, prefix[v], publish=v.startswith("publish")) for v in variants}
    if args.baseline_ref:  # the old script takes no channel arguments: swap both (a benchmark may reach inside)
        sinks[variants[0]]._script = client.register_script(script_at(args.baseline_ref))
        sinks[variants[0]]._script_head = []
    followed = [quote_channel(prefix["publish_followed"], t.symbol) for t in ticks_for(args.symbols, 0)]
    url = urlsplit(run.base.redis.url.get_secret_value())
    cli = [shutil.which("redis-cli") or "redis-cli", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)]
    env = {**os.environ, "REDISCLI_AUTH": url.password or ""}  # the password by environment, not argv
    follower = subprocess.Popen(  # noqa: ASYNC220 - starts at once, only terminated below
        [*cli, "SUBSCRIBE", *followed], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    flush_us: dict[str, list[float]] = {v: [] for v in variants}
    try:
        deadline = time.monotonic() + 10
        while (await client.pubsub_numsub(followed[-1]))[0][1] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-cli did not subscribe within 10 s")
            await asyncio.sleep(0.05)
        for step in range(1, args.warmup + args.flushes + 1):
            for v in rotated(variants, step):
                sinks[v].write(ticks_for(args.symbols, step))
                started = time.perf_counter()
                run.check(v, "quotes moved by a flush", args.symbols, await sinks[v].flush(observe_latency=False))
                if step > args.warmup:
                    flush_us[v].append((time.perf_counter() - started) * 1e6)
        run.check("publish_followed", "subscribers at the end", 1, (await client.pubsub_numsub(followed[0]))[0][1])
    finally:
        follower.terminate()
        follower.wait(10)
        await client.aclose()
    run.checks[:] = [c for c in run.checks if not c["ok"]] or run.checks[-1:]  # one line per flush is too many
    median = {v: statistics.median(t) for v, t in flush_us.items()}
    p99 = {v: statistics.quantiles(t, n=100)[98] for v, t in flush_us.items()}
    ratios = {v: median[v] / median[variants[0]] for v in variants[1:]}
    return {"median_flush_us": median, "p99_flush_us": p99, "ratios_to_baseline": ratios}


OPTIONS = {
    "flushes": (2000, None, "timed flushes of each variant"),
    "warmup": (20, None, "untimed flushes of each first"),
    "baseline_ref": ("", None, "also time the quote script of this git revision (the 'before')"),
}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
