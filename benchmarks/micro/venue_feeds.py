"""How fast the exchange feeds turn frames into ticks.

    python -m benchmarks.micro.venue_feeds [--n 100000]

For Binance and Coinbase, the parser alone (frames/s, ns per frame: JSON decode,
exact decimals, timestamps, gap check, the Tick) and the whole adapter over a
loopback websocket from a local server sending the same frames as fast as it can
(ticks/s: websockets framing, the reader task, the hand-over to ``ticks()``), in
the same run. No services.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from benchmarks.harness.run import Run, main
from nexanest.pipeline.settings import RetrySettings
from nexanest.producers.feeds.adapter import NullObserver
from nexanest.producers.feeds.binance import BinanceConfig, BinanceFeed, BinanceParser
from nexanest.producers.feeds.coinbase import CoinbaseConfig, CoinbaseFeed, CoinbaseParser
from nexanest.producers.feeds.venue_parser import FrameResult, VenueParser
from nexanest.producers.feeds.websocket import ConnectionOptions, WebSocketFeed
from nexanest.producers.normalise import Normaliser

T0_MS = 1_764_547_200_000
MAKER, TAKER = "ac928c66-ca53-498f-9c13-a110027a60e8", "132fb6ae-456b-4654-b4e0-d681ac05cea1"
SERVICES = False
OPTIONS = {"n": (100_000, None, "frames per venue")}


def binance_frames(n: int) -> list[str]:
    def data(i: int) -> dict[str, Any]:
        price, size = f"{91_000 + i % 500}.{i % 100:02d}000000", f"0.{i % 1000:03d}10000"
        trade = {"e": "trade", "E": T0_MS + i, "s": "BTCUSDT", "t": 1_000 + i, "p": price, "q": size}
        return trade | {"T": T0_MS + i, "m": i % 2 == 0, "M": True}

    return [json.dumps({"stream": "btcusdt@trade", "data": data(i)}, separators=(",", ":")) for i in range(n)]


def coinbase_frames(n: int) -> list[str]:
    def frame(i: int) -> dict[str, Any]:
        match = {"type": "match", "trade_id": 1_000 + i, "sequence": 50_000 + 3 * i, "maker_order_id": MAKER}
        at = f"2025-12-01T00:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}123Z"
        trade = {"product_id": "BTC-USD", "size": f"0.{i % 1000:03d}1", "price": f"{91_000 + i % 500}.{i % 100:02d}"}
        return match | {"taker_order_id": TAKER, "time": at} | trade | {"side": "sell"}

    return [json.dumps(frame(i), separators=(",", ":")) for i in range(n)]


def parse_rate(run: Run, parser: VenueParser, frames: Sequence[str]) -> dict[str, float]:
    out = FrameResult()
    ticks = 0
    started = time.perf_counter_ns()
    for frame in frames:
        parser.parse(frame, out)
        ticks += len(out.ticks)
        out.clear()
    elapsed_ns = time.perf_counter_ns() - started
    run.check(type(parser).__name__, "a tick from each frame", len(frames), ticks)
    return {"frames_per_s": round(len(frames) / (elapsed_ns / 1e9)), "ns_per_frame": round(elapsed_ns / len(frames))}


async def adapter_rate(make: type[WebSocketFeed], frames: Sequence[str]) -> dict[str, float]:
    async def play(ws: ServerConnection) -> None:
        if make is CoinbaseFeed:
            await ws.recv()  # the subscribe message
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    options = ConnectionOptions(retry=RetrySettings(initial_backoff_s=0.05, max_backoff_s=0.2))
    async with serve(play, "127.0.0.1", 0, ping_interval=None, compression=None) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        url = f"ws://{host}:{port}"
        feed: WebSocketFeed
        if make is CoinbaseFeed:
            feed = CoinbaseFeed(CoinbaseConfig(["BTC-USD"], url, source="bench"), options, seq_start=0)
        else:
            feed = BinanceFeed(BinanceConfig(["btcusdt"], url, source="bench"), options, seq_start=0)
        await feed.start(NullObserver())
        started = time.perf_counter()
        got = batches = 0
        async for batch in feed.ticks():
            got += len(batch)
            batches += 1
            if got >= len(frames):
                break
        elapsed = time.perf_counter() - started
        await feed.stop()
    return {"ticks_per_s": round(got / elapsed), "mean_batch": round(got / batches, 1)}


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    b_frames, c_frames = binance_frames(args.n), coinbase_frames(args.n)
    binance = BinanceParser("ws://x", Normaliser("BINANCE", "bench", {"BTCUSDT": "BTCUSDT"}), ["BTCUSDT"])
    coinbase = CoinbaseParser("ws://x", Normaliser("COINBASE", "bench", {"BTC-USD": "BTC-USD"}), ["BTC-USD"])
    parsers = {
        "binance_parse": parse_rate(run, binance, b_frames),
        "coinbase_parse": parse_rate(run, coinbase, c_frames),
    }
    adapters = {"binance_adapter": await adapter_rate(BinanceFeed, b_frames)}
    return parsers | adapters | {"coinbase_adapter": await adapter_rate(CoinbaseFeed, c_frames)}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
