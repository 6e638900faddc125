"""The consumer's CPU per tick from record batch to COPY buffer, the old path against the new.

    python -m benchmarks.micro.take_path [--ticks 100000] [--batch-rows 20000] [--repeat 7] [--only PATH]

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
same COPY stream (checked). ``--only PATH`` takes one path once (``none``: sets
up only), for instruction counts, repeatable where CPU times on the shared box
are not: the path's are its run's "Collected" count minus ``--only none``'s::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m benchmarks.micro.take_path --ticks 20000 --only raw_records

Results: ``benchmarks/RESULTS.md`` (2026-12-01).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Iterator
from itertools import islice, repeat
from operator import attrgetter
from typing import Any

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from benchmarks.harness.run import BenchError, Run, main
from nexanest.pipeline.kafka_records import deliver_as_read
from nexanest.pipeline.settings import ValidationSettings
from nexanest.pipeline.sinks.copy_binary import StockPriceCopyEncoder
from nexanest.pipeline.validation import TickValidator
from nexanest.producers.feeds.synthetic import SyntheticFeed
from nexanest.schemas.ticks import Tick, encode_tick

_LZ4 = 3  # aiokafka's DefaultRecordBatch compression code
_READ_COMMITTED = 1
_VALUE, _OFFSET = attrgetter("value"), attrgetter("offset")
TP = TopicPartition("ticks", 0)
SERVICES = False
OPTIONS = {
    "ticks": (100_000, None, "ticks"),
    "batch_rows": (20_000, None, "records per take"),
    "repeat": (7, None, "repetitions, the best of them kept"),
    "only": ("", None, "consumer_records, raw_records or none: one path once (callgrind)"),
}


def record_batches(ticks: list[Tick]) -> bytes:
    """The ticks as the partition's log holds them: lz4 v2 record batches of 512 kB."""
    chunks: list[bytes] = []

    def builder(base: int) -> Any:
        return DefaultRecordBatchBuilder(2, _LZ4, False, 1, 0, base, 512 * 1024)

    def based(built: bytearray, base: int) -> bytes:
        built[0:8] = base.to_bytes(8, "big")  # the broker assigns the base offset; here we do
        return bytes(built)

    batch, base = builder(0), 0
    for offset, tick in enumerate(ticks):
        key, value = tick.symbol.encode(), encode_tick(tick)
        if batch.append(offset - base, timestamp=None, key=key, value=value, headers=[]) is None:
            chunks.append(based(batch.build(), base))
            batch, base = builder(offset), offset
            batch.append(0, timestamp=None, key=key, value=value, headers=[])
    return b"".join([*chunks, based(batch.build(), base)])


def takes(data: bytes, batch_rows: int, *, raw: bool, spent: dict[str, float]) -> Iterator[list[Any]]:
    """The records of the log in takes of ``batch_rows``, the time to unpack each added to ``spent``."""
    records = PartitionRecords(TP, MemoryRecords(data), None, 0, None, None, False, _READ_COMMITTED)
    if raw:
        deliver_as_read(records)
    while True:
        started = time.process_time()
        take = list(islice(records, batch_rows))
        spent["records"] += time.process_time() - started
        if take:
            yield take
        if len(take) < batch_rows:  # the end (PartitionRecords may not be read past it)
            return


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


def take_path(data: bytes, batch_rows: int, raw: bool, encoder: StockPriceCopyEncoder) -> tuple[Any, ...]:
    """One path over the whole log, take by take as the loop takes them (one take's records alive at a
    time: what the garbage collector walks is part of the cost): CPU seconds per stage, the COPY stream."""
    validate, validator = validate_after if raw else validate_before, TickValidator(ValidationSettings())
    now_ns, spent, out = time.time_ns(), {"records": 0.0, "validate": 0.0, "encode": 0.0}, []
    for take in takes(data, batch_rows, raw=raw, spent=spent):
        started = time.process_time()
        rows = validate(validator, take, now_ns=now_ns)
        validated = time.process_time()
        out.append(bytes(encoder.encode(rows)))
        spent["validate"] += validated - started
        spent["encode"] += time.process_time() - validated
    return spent, out


async def measure(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    data = record_batches(list(SyntheticFeed(run.feed(args.ticks, "bench", time.time_ns() - 3600 * 10**9)).generate()))
    paths = {"consumer_records": False, "raw_records": True}
    if args.only:  # one path once, for callgrind
        if args.only not in (*paths, "none"):
            raise BenchError(f"--only {args.only}: not one of {', '.join(paths)}, none")
        if args.only != "none":
            raw = paths[args.only]
            take_path(data, args.batch_rows, raw, StockPriceCopyEncoder(max_cached_numerics=65_536 if raw else 0))
        return {"only": args.only}
    new_encoder, seconds = StockPriceCopyEncoder(), {path: dict[str, float]() for path in paths}
    for _ in range(args.repeat):
        outputs = []
        for path, raw in paths.items():
            gc.collect()
            encoder = new_encoder if raw else StockPriceCopyEncoder(max_cached_numerics=0)
            spent, out = take_path(data, args.batch_rows, raw, encoder)
            for stage, t in spent.items():
                seconds[path][stage] = min(seconds[path].get(stage, float("inf")), t)
            outputs.append(out)
        run.check("take_path", "the two paths encode the same COPY stream", True, outputs[0] == outputs[1])
    us = {p: {k: v / args.ticks * 1e6 for k, v in s.items()} for p, s in seconds.items()}
    for s in us.values():
        s["total"] = sum(s.values())
    before, after = us["consumer_records"], us["raw_records"]
    ratios = {k: before[k] / after[k] for k in before}
    return {"record_bytes": len(data), "us_per_tick": us, "before_over_after": ratios}


if __name__ == "__main__":
    raise SystemExit(main(__name__))
