"""Which encoding for ticks on the wire: MessagePack or JSON (both via msgspec)?

    python -m benchmarks.micro.wire_encoding [--n 200000]

Bytes per tick and encode/decode ns per tick of each encoding (the second of
two passes; the first warms up), and the msgpack/json ratios. No services.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgspec

from benchmarks.harness.run import Run, main
from nexanest.schemas.ticks import Tick

SERVICES = False
OPTIONS = {"n": (200_000, None, "ticks to encode and decode")}


def passes(
    run: Run, enc: msgspec.msgpack.Encoder | msgspec.json.Encoder, dec: Any, ticks: list[Tick]
) -> dict[str, float]:
    t0 = time.perf_counter_ns()
    blobs = [enc.encode(t) for t in ticks]
    t1 = time.perf_counter_ns()
    run.check(type(enc).__module__, "the round trip keeps the ticks", True, [dec.decode(b) for b in blobs] == ticks)
    n = len(ticks)
    out = {"bytes_per_tick": sum(map(len, blobs)) / n, "encode_ns": (t1 - t0) / n}
    return out | {"decode_ns": (time.perf_counter_ns() - t1) / n}


def tick(i: int) -> Tick:
    p, fixed = 187_250_000_000 + i * 10**7, {"exchange": "XNAS", "size_e9": 10**11, "source": "synthetic-0"}
    at: dict[str, Any] = {"ts_ns": 1_764_000_000 * 10**9 + i * 50_000, "seq": i, **fixed}
    return Tick(symbol=f"SYM{i % 500:03d}", price_e9=p, bid_e9=p - 10**7, ask_e9=p + 10**7, **at)


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    ticks = [tick(i) for i in range(args.n)]
    for _ in range(2):
        mp = passes(run, msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Tick), ticks)
        js = passes(run, msgspec.json.Encoder(), msgspec.json.Decoder(Tick), ticks)
    ratio = {k: round(mp[k] / js[k], 3) for k in mp}
    return {"msgspec": msgspec.__version__, "msgpack": mp, "json": js, "ratio_msgpack_to_json": ratio}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
