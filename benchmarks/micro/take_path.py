"""The consumer's CPU per tick from record batch to COPY buffer, the old path against the new.

    python -m benchmarks.micro.take_path [--ticks 100000] [--batch-rows 20000] [--symbols 300] [--repeat 7]

No services: the ticks (the benchmarks' synthetic feed, fixed seed) are
MessagePack-encoded into lz4 record batches as the publisher builds them
(``DefaultRecordBatchBuilder``, 512 kB), and both paths read the same bytes
through aiokafka's own ``PartitionRecords`` (decompression included), batch
by batch of ``--batch-rows`` as the loop takes them:

* ``consumer_records`` (before): ``ConsumerRecord``\\ s as ``getmany`` returned
  them, ``TickValidator.check`` per record, the rows built one by one (the
  loop's ``_take`` as it was), ``StockPriceCopyEncoder`` without its numeric
  cache (``max_cached_numerics=0``, the encoder as it was);
* ``raw_records`` (after): the records as unpacked (``TickConsumer``'s
  ``deliver_as_read``), ``TickValidator.check_many`` per partition, rows by
  ``zip``, the encoder with its numeric cache (one encoder for the run, as the
  sink keeps one).

Each stage is timed on its own (``time.process_time`` summed over the takes,
the best of ``--repeat`` runs, the two paths alternating within each
repetition), so the ratios come from the same run on the same bytes; only one
take's records are alive at a time, as in the loop (the garbage collector's
walks over live records are part of the cost). Both paths must produce the
same COPY stream (checked). ``--only PATH`` runs one path once, for
instruction counts under callgrind (see ``run_once``).

Measured 2026-12-01 on the 2-core box under load 8-12 from other sessions
(so read the ratios): callgrind, 20,000 ticks in one take, 43,426 instructions
per tick before against 27,373 after (1.59x fewer; the numeric cache cold, as
in a consumer's first batch); CPU times, 100,000 ticks in takes of 20,000,
best of 5: 5.40 -> 4.07 us per tick (1.33x; records 1.54x, validate 1.05x,
encode 1.49x), noisy.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Iterator
from itertools import islice, repeat
from operator import attrgetter
from typing import Any

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from nexanest.pipeline.kafka_records import deliver_as_read
from nexanest.pipeline.settings import ValidationSettings
from nexanest.pipeline.sinks.copy_binary import StockPriceCopyEncoder
from nexanest.pipeline.validation import TickValidator
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.schemas.ticks import Tick, encode_tick

_LZ4 = 3  # aiokafka's DefaultRecordBatch compression code
_READ_COMMITTED = 1
_VALUE, _OFFSET = attrgetter("value"), attrgetter("offset")
TP = TopicPartition("ticks", 0)


def record_batches(ticks: list[Tick]) -> bytes:
    """The ticks as the partition's log holds them: lz4 v2 record batches of 512 kB."""
    chunks: list[bytes] = []

    def builder(base: int) -> Any:
        return DefaultRecordBatchBuilder(2, _LZ4, False, 1, 0, base, 512 * 1024)

    batch, base = builder(0), 0
    for offset, tick in enumerate(ticks):
        key, value = tick.symbol.encode(), encode_tick(tick)
        if batch.append(offset - base, timestamp=None, key=key, value=value, headers=[]) is None:
            chunks.append(bytes(_based(batch.build(), base)))
            batch, base = builder(offset), offset
            batch.append(0, timestamp=None, key=key, value=value, headers=[])
    chunks.append(bytes(_based(batch.build(), base)))
    return b"".join(chunks)


def _based(built: bytearray, base: int) -> bytearray:
    built[0:8] = base.to_bytes(8, "big")  # the broker assigns the base offset; here we do
    return built


def _takes(data: bytes, batch_rows: int, *, raw: bool, spent: dict[str, float]) -> Iterator[list[Any]]:
    """The records of the log in takes of ``batch_rows``, the time to unpack each added to ``spent``."""
    records = PartitionRecords(TP, MemoryRecords(data), None, 0, None, None, False, _READ_COMMITTED)
    if raw:
        deliver_as_read(records)
    while True:
        started = time.process_time()
        take = list(islice(records, batch_rows))
        spent["records"] += time.process_time() - started
        if not take:
            return
        yield take


def fetched(data: bytes, batch_rows: int, *, raw: bool) -> list[list[Any]]:
    """The records of the log in takes of ``batch_rows``, as ``getmany`` gives them."""
    records = PartitionRecords(TP, MemoryRecords(data), None, 0, None, None, False, _READ_COMMITTED)
    if raw:
        deliver_as_read(records)
    takes, take = [], []
    for record in records:
        take.append(record)
        if len(take) == batch_rows:
            takes.append(take)
            take = []
    return [*takes, take] if take else takes


def validate_before(validator: TickValidator, take: list[Any], *, now_ns: int) -> list[tuple[Tick, int, int]]:
    rows: list[tuple[Tick, int, int]] = []
    for msg in take:
        result = validator.check(msg.value, now_ns)
        if isinstance(result, Tick):
            rows.append((result, TP.partition, msg.offset))
    times = [t.ts_ns for t, _, _ in rows]
    min(times), max(times)
    return rows


def validate_after(validator: TickValidator, take: list[Any], *, now_ns: int) -> list[tuple[Tick, int, int]]:
    valid, refused = validator.check_many(map(_VALUE, take), now_ns)
    assert not refused
    rows = list(zip(valid, repeat(TP.partition), map(_OFFSET, take), strict=False))
    times = attrgetter("ts_ns")
    min(map(times, valid)), max(map(times, valid))
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    start_ns = time.time_ns() - 3600 * 10**9
    config = SyntheticConfig(args.symbols, 100_000, args.ticks, None, args.seed, start_ns, "bench", False)
    ticks = list(SyntheticFeed(config).generate())
    data = record_batches(ticks)
    validator = TickValidator(ValidationSettings())
    now_ns = time.time_ns()
    new_encoder = StockPriceCopyEncoder()
    seconds: dict[str, dict[str, float]] = {"consumer_records": {}, "raw_records": {}}
    for _ in range(args.repeat):
        outputs = []
        for path, raw in (("consumer_records", False), ("raw_records", True)):
            validate = validate_after if raw else validate_before
            encoder = new_encoder if raw else StockPriceCopyEncoder(max_cached_numerics=0)
            spent = {"records": 0.0, "validate": 0.0, "encode": 0.0}
            out = []
            gc.collect()
            # Take by take, as the loop does: one take's records alive at a time
            # (what the garbage collector walks is part of the cost).
            for take in _takes(data, args.batch_rows, raw=raw, spent=spent):
                started = time.process_time()
                rows = validate(validator, take, now_ns=now_ns)
                validated = time.process_time()
                out.append(bytes(encoder.encode(rows)))
                spent["validate"] += validated - started
                spent["encode"] += time.process_time() - validated
            for stage, t in spent.items():
                seconds[path][stage] = min(seconds[path].get(stage, float("inf")), t)
            outputs.append(out)
        if outputs[0] != outputs[1]:
            raise AssertionError("the two paths encoded different COPY streams")
    us = {p: {k: v / args.ticks * 1e6 for k, v in s.items()} for p, s in seconds.items()}
    for s in us.values():
        s["total"] = sum(s.values())
    before, after = us["consumer_records"], us["raw_records"]
    return {
        "parameters": vars(args),
        "record_bytes": len(data),
        "us_per_tick": us,
        "before_over_after": {k: before[k] / after[k] for k in before},
    }


def run_once(args: argparse.Namespace) -> None:
    """Set up, then take ``args.only``'s path once (``none``: set up only), for
    instruction counts: repeatable where CPU times on the shared box are not::

        valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
            .venv/bin/python -m benchmarks.micro.take_path --ticks 20000 --only raw_records

    The path's instructions are its run's "Collected" count minus ``--only none``'s."""
    start_ns = time.time_ns() - 3600 * 10**9
    config = SyntheticConfig(args.symbols, 100_000, args.ticks, None, args.seed, start_ns, "bench", False)
    data = record_batches(list(SyntheticFeed(config).generate()))
    validator, now_ns = TickValidator(ValidationSettings()), time.time_ns()
    if args.only == "none":
        return
    raw = args.only == "raw_records"
    validate = validate_after if raw else validate_before
    encoder = StockPriceCopyEncoder(max_cached_numerics=65_536 if raw else 0)
    for take in fetched(data, args.batch_rows, raw=raw):
        encoder.encode(validate(validator, take, now_ns=now_ns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument("--symbols", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=("consumer_records", "raw_records", "none"), help="one path once (callgrind)")
    args = parser.parse_args()
    if args.only:
        run_once(args)
        return
    result = measure(args)
    for path, stages in result["us_per_tick"].items():
        print(f"{path:18}", "  ".join(f"{k} {v:.3f} us" for k, v in stages.items()))
    print("before / after    ", "  ".join(f"{k} {v:.2f}x" for k, v in result["before_over_after"].items()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
