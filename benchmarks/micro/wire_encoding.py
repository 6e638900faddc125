"""Which encoding for ticks on the wire: MessagePack or JSON (both via msgspec)?

Run: python -m benchmarks.micro.wire_encoding [--n 200000]
Prints JSON: bytes per tick and encode/decode ns per tick for each encoding,
plus the msgpack/json ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import msgspec

from nexanest.schemas.ticks import Tick


def sample_ticks(n: int) -> list[Tick]:
    base_ns = 1_764_000_000_000_000_000
    return [
        Tick(
            symbol=f"SYM{i % 500:03d}",
            exchange="XNAS",
            price_e9=187_250_000_000 + i * 10_000_000,
            size_e9=(100 + i % 900) * 1_000_000_000,
            ts_ns=base_ns + i * 50_000,
            source="synthetic-0",
            seq=i,
            bid_e9=187_240_000_000 + i * 10_000_000,
            ask_e9=187_260_000_000 + i * 10_000_000,
        )
        for i in range(n)
    ]


def measure(
    name: str,
    enc: msgspec.msgpack.Encoder | msgspec.json.Encoder,
    dec: msgspec.msgpack.Decoder[Tick] | msgspec.json.Decoder[Tick],
    ticks: list[Tick],
) -> dict[str, float]:
    t0 = time.perf_counter_ns()
    blobs = [enc.encode(t) for t in ticks]
    t1 = time.perf_counter_ns()
    decoded = [dec.decode(b) for b in blobs]
    t2 = time.perf_counter_ns()
    assert decoded == ticks, f"{name} round trip changed the ticks"
    n = len(ticks)
    return {
        "bytes_per_tick": sum(map(len, blobs)) / n,
        "encode_ns_per_tick": (t1 - t0) / n,
        "decode_ns_per_tick": (t2 - t1) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="ticks to encode and decode (default 200000)")
    args = parser.parse_args()
    ticks = sample_ticks(args.n)
    results = {}
    for _ in range(2):  # first pass warms up; keep the second
        results = {
            "msgpack": measure("msgpack", msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Tick), ticks),
            "json": measure("json", msgspec.json.Encoder(), msgspec.json.Decoder(Tick), ticks),
        }
    mp, js = results["msgpack"], results["json"]
    report = {
        "cores": os.cpu_count(),
        "msgspec": msgspec.__version__,
        "ticks": args.n,
        **results,
        "ratio_msgpack_to_json": {k: round(mp[k] / js[k], 3) for k in mp},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
