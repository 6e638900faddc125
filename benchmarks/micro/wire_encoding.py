"""Which encoding for ticks on the wire: MessagePack or JSON (both via msgspec)?

    python -m benchmarks.micro.wire_encoding [--n 200000]

Prints JSON: bytes per tick and encode/decode ns per tick of each encoding (the
second of two passes; the first warms up), and the msgpack/json ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import msgspec

from nexanest.schemas.ticks import Tick


def measure(enc: msgspec.msgpack.Encoder | msgspec.json.Encoder, dec: Any, ticks: list[Tick]) -> dict[str, float]:
    t0 = time.perf_counter_ns()
    blobs = [enc.encode(t) for t in ticks]
    t1 = time.perf_counter_ns()
    assert [dec.decode(b) for b in blobs] == ticks, "the round trip changed the ticks"
    n = len(ticks)
    out = {"bytes_per_tick": sum(map(len, blobs)) / n, "encode_ns": (t1 - t0) / n}
    return out | {"decode_ns": (time.perf_counter_ns() - t1) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="ticks to encode and decode (200,000)")
    n = parser.parse_args().n
    ticks = [
        Tick(
            symbol=f"SYM{i % 500:03d}",
            exchange="XNAS",
            price_e9=187_250_000_000 + i * 10**7,
            size_e9=10**11,
            ts_ns=1_764_000_000 * 10**9 + i * 50_000,
            source="synthetic-0",
            seq=i,
            bid_e9=187_240_000_000 + i * 10**7,
            ask_e9=187_260_000_000 + i * 10**7,
        )
        for i in range(n)
    ]
    for _ in range(2):
        mp = measure(msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Tick), ticks)
        js = measure(msgspec.json.Encoder(), msgspec.json.Decoder(Tick), ticks)
    ratio = {k: round(mp[k] / js[k], 3) for k in mp}
    facts = {"cores": os.cpu_count(), "msgspec": msgspec.__version__, "ticks": n}
    print(json.dumps(facts | {"msgpack": mp, "json": js, "ratio_msgpack_to_json": ratio}, indent=2))


if __name__ == "__main__":
    main()
