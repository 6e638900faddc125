"""What publishing quote updates costs the consumer: ``RedisQuoteSink.flush`` with and without.

    python -m benchmarks.micro.quote_publish [--symbols 300] [--flushes 2000] [--baseline-ref REF]

Each flush moves every one of ``--symbols`` quotes forward in one Lua call (one
round trip), as a consumer batch does at saturation (300 symbols: the suite's
feed). The variants take turns flush by flush (in a rotating order, so that
whatever else the machine does weighs on all of them alike), each on keys and
channels of its own, against the same Redis:

* ``script@REF`` (with ``--baseline-ref``): the quote script as it was at that
  git revision, before quotes were published: the "before" of the comparison;
* ``no_publish``: today's script with publishing off (``publish=False``);
* ``publish_unfollowed``: publishing, nobody subscribed (a PUBLISH finds no
  subscriber and sends nothing);
* ``publish_followed``: publishing, with one subscriber (``redis-cli``, in its
  own process) following every symbol's channel, as the market data service's
  hub does when its clients follow every symbol: Redis then also writes each
  update to that subscriber's connection.

Reports the median and 99th percentile of the flush time (client wall time, so
it includes the round trip and the script's time in Redis) and the ratios to
the baseline. The subscriber must still be subscribed at the end (Redis
disconnects a subscriber that falls too far behind): otherwise the run fails
rather than report a cost that skipped the fan-out.

Keys go to ``bench.<run>:quote:*`` in the quotes database of the settings and
are deleted afterwards; set ``NEXANEST_REDIS__DB_QUOTES`` to run elsewhere.
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
import uuid
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
import uvloop

from benchmarks.harness.report import ROOT, command_line, print_and_save
from nexanest.pipeline.settings import load_settings
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink, quote_channel
from nexanest.schemas.ticks import Tick

T0 = 1_800_000_000_000_000_000


def script_at(ref: str) -> str:
    """The ``_APPLY_QUOTES`` script of ``pipeline/sinks/redis_quotes.py`` at git revision ``ref``."""
    source = subprocess.run(
        ["git", "show", f"{ref}:pipeline/sinks/redis_quotes.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "_APPLY_QUOTES":
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise SystemExit(f"no _APPLY_QUOTES in pipeline/sinks/redis_quotes.py at {ref}")


def make_sink(client: redis.Redis, prefix: str, variant: str, baseline: str | None) -> RedisQuoteSink:
    if variant.startswith("script@"):
        sink = RedisQuoteSink(client, prefix, publish=False)
        # The old script takes no channel arguments: swap both (a benchmark may reach inside).
        sink._script = client.register_script(baseline or "")
        sink._script_head = []
        return sink
    return RedisQuoteSink(client, prefix, publish=variant != "no_publish")


def ticks_for(symbols: int, step: int) -> list[Tick]:
    """One tick per symbol, each later than the previous step's, so every quote moves."""
    ts = T0 + step * 1_000
    return [
        Tick(
            symbol=f"B{i:04d}",
            exchange="XBEN",
            price_e9=(100 + i) * 10**9 + step,
            size_e9=100 * 10**9,
            ts_ns=ts,
            source="bench",
            seq=step,
            bid_e9=(100 + i) * 10**9 + step - 10**7,
            ask_e9=(100 + i) * 10**9 + step + 10**7,
        )
        for i in range(symbols)
    ]


def start_follower(url: str, channels: list[str]) -> subprocess.Popen[bytes]:
    """``redis-cli SUBSCRIBE`` on every channel, its output discarded (password by
    environment; no database number: pub/sub ignores it)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise SystemExit("redis-cli is needed for the publish_followed variant")
    parts = urlsplit(url)
    env = {**os.environ, "REDISCLI_AUTH": parts.password or ""}
    return subprocess.Popen(
        [cli, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379), "SUBSCRIBE", *channels],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def subscribers(client: redis.Redis, channel: str) -> int:
    counts = await client.pubsub_numsub(channel)
    return int(counts[0][1])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    url, db = settings.redis.url.get_secret_value(), settings.redis.db_quotes
    run_id = uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(url, db=db)
    baseline = script_at(args.baseline_ref) if args.baseline_ref else None
    variants = [*([f"script@{args.baseline_ref}"] if baseline else []), "no_publish", "publish_unfollowed"]
    variants.append("publish_followed")
    # Each variant writes its own keys (and so publishes on its own channels), so
    # that the follower follows only publish_followed's while all run interleaved.
    prefixes = {v: f"bench.quote-{run_id}-{n}:quote:" for n, v in enumerate(variants)}
    sinks = {v: make_sink(client, prefixes[v], v, baseline) for v in variants}
    followed = [quote_channel(prefixes["publish_followed"], t.symbol) for t in ticks_for(args.symbols, 0)]
    follower = start_follower(url, followed)
    flush_us: dict[str, list[float]] = {v: [] for v in variants}
    try:
        deadline = time.monotonic() + 10
        while await subscribers(client, followed[-1]) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-cli did not subscribe within 10 s")
            await asyncio.sleep(0.05)
        for step in range(1, args.warmup + args.flushes + 1):
            # Flush by flush, in an order that rotates: a disturbance of the shared
            # machine falls on every variant alike.
            for variant in variants[step % len(variants) :] + variants[: step % len(variants)]:
                sink = sinks[variant]
                sink.write(ticks_for(args.symbols, step))
                started = time.perf_counter()
                moved = await sink.flush(observe_latency=False)
                elapsed_us = (time.perf_counter() - started) * 1e6
                if moved != args.symbols:
                    raise RuntimeError(f"{variant}: a flush moved {moved} quotes, not {args.symbols}")
                if step > args.warmup:
                    flush_us[variant].append(elapsed_us)
        if await subscribers(client, followed[0]) != 1:
            raise RuntimeError("the subscriber was disconnected: Redis found it too slow")
    finally:
        follower.terminate()
        follower.wait(10)
        for prefix in prefixes.values():
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
        await client.aclose()
    summary = {
        v: {
            "median_flush_us": statistics.median(times),
            "p99_flush_us": statistics.quantiles(times, n=100)[98],
            "median_us_per_quote": statistics.median(times) / args.symbols,
        }
        for v, times in flush_us.items()
    }
    base = variants[0]
    return {
        "benchmark": "quote_publish",
        "command": command_line("benchmarks.micro.quote_publish"),
        "parameters": vars(args),
        "summary": summary,
        "ratios_to_baseline": {
            v: summary[v]["median_flush_us"] / summary[base]["median_flush_us"] for v in variants if v != base
        },
        "baseline": base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=300, help="quotes moved per flush (default 300)")
    parser.add_argument("--flushes", type=int, default=2000, help="timed flushes of each variant (default 2000)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed flushes of each first (default 20)")
    parser.add_argument("--baseline-ref", help="also time the quote script of this git revision (the 'before')")
    print_and_save("quote_publish", uvloop.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
