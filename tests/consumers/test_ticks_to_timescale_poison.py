"""No input stops the consumer: arbitrary records through the real consumer,
Kafka, TimescaleDB and Redis.

One consumer runs for all of a test's examples. Each example publishes a mix
of good ticks, ticks broken in a known way (values the write path cannot store,
invalid UTF-8, nesting too deep, values the rules refuse) and good ticks with
fields replaced, removed or added at random (any MessagePack value), then waits
until the consumer has stored its offsets past all of them, and checks:

* the consumer is still running;
* every record is in exactly one place: a row of ``stock_prices`` or a dead
  letter with its reason, its original bytes and where it came from (so the
  count adds up);
* every good tick is stored once, with its values; every broken one is where
  its kind says.

The second test runs the same with a decode-only validator, so values that the
rules would catch reach the database: it must refuse them row by row
(``rejected_by_database``, with the server's message) and store the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.pipeline.db import e9_to_decimal
from nexanest.pipeline.kafka import ensure_topics
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.dead_letter import HEADER_DETAIL, HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON
from nexanest.pipeline.validation import REASONS, REJECTED_BY_DATABASE, TickValidator
from nexanest.schemas.ticks import Tick

pytestmark = pytest.mark.integration

HOUR_NS = 3600 * 10**9
STORED = "stored"


class DecodeOnly(TickValidator):
    """Decodes (the bounds of the Tick struct) but applies no rule."""

    def check_tick(self, tick: Tick, now_ns: int | None = None) -> Tick | tuple[str, str]:
        return tick


# A broken tick: (kind, how to break the fields of a good one, where it ends up
# under the rules, where under decode only). Bytes-level breakage is in RAW_KINDS.
FIELD_KINDS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("seq_beyond_bigint", lambda f: f.update(seq=2**63), "schema_violation", "schema_violation"),
    ("seq_max_uint64", lambda f: f.update(seq=2**64 - 1), "schema_violation", "schema_violation"),
    ("seq_negative", lambda f: f.update(seq=-1), "schema_violation", "schema_violation"),
    ("ts_beyond_int64", lambda f: f.update(ts_ns=2**64 - 1), "schema_violation", "schema_violation"),
    ("exchange_too_long", lambda f: f.update(exchange="X" * 65), "schema_violation", "schema_violation"),
    ("source_too_long", lambda f: f.update(source="s" * 129), "schema_violation", "schema_violation"),
    ("empty_exchange", lambda f: f.update(exchange=""), "schema_violation", "schema_violation"),
    ("nul_in_exchange", lambda f: f.update(exchange="X\x00N"), "bad_text", REJECTED_BY_DATABASE),
    ("nul_in_source", lambda f: f.update(source=f["source"] + "\x00"), "bad_text", REJECTED_BY_DATABASE),
    ("nul_in_symbol", lambda f: f.update(symbol="A\x00"), "bad_symbol", REJECTED_BY_DATABASE),
    ("zero_price", lambda f: f.update(price_e9=0), "bad_price", REJECTED_BY_DATABASE),
    ("negative_size", lambda f: f.update(size_e9=-1), "bad_size", REJECTED_BY_DATABASE),
    ("lower_case_symbol", lambda f: f.update(symbol="aapl"), "bad_symbol", STORED),
    ("crossed_quote", lambda f: f.update(bid_e9=f["price_e9"] + 2, ask_e9=f["price_e9"] + 1), "crossed_quote", STORED),
    ("from_the_future", lambda f: f.update(ts_ns=f["ts_ns"] + 2 * HOUR_NS), "future_timestamp", STORED),
    ("version_2", lambda f: f.update(v=2), "unsupported_version", STORED),
    ("price_max_uint64", lambda f: f.update(price_e9=2**64 - 1, bid_e9=None, ask_e9=None), STORED, STORED),
]
RAW_KINDS: list[tuple[str, Callable[[bytes], bytes | None], str]] = [
    ("not_utf8", lambda raw: raw.replace(b"\xa4XNAS", b"\xa4\xff\xfeAS"), "undecodable"),
    ("surrogate", lambda raw: raw.replace(b"\xa4XNAS", b"\xa4\xed\xa0\x80S"), "undecodable"),
    ("nested_too_deep", lambda raw: bytes([raw[0] + 1]) + raw[1:] + b"\xa1z" + b"\x91" * 3000 + b"\xc0", "undecodable"),
    ("truncated", lambda raw: raw[: len(raw) // 2], "undecodable"),
    ("oversized", lambda raw: raw + b"\x00" * 5000, "oversized"),
    ("no_value", lambda raw: None, "undecodable"),
]
#: Fields random changes may touch: all but ``source``, by which the test finds
#: its rows among everyone else's (the known kinds above break ``source`` too).
FIELDS = ("v", "symbol", "exchange", "price_e9", "size_e9", "bid_e9", "ask_e9", "ts_ns", "seq")
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=70) | st.binary(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@dataclass
class Message:
    """One record to publish: how it was made and where it must end up
    (``STORED``, a reason, or ``None``: anywhere, exactly once)."""

    kind: str
    fields: dict[str, Any]
    expected_rules: str | None = STORED
    expected_decode_only: str | None = STORED
    #: A known breakage of the fields, or of the encoded bytes.
    field_change: Callable[[dict[str, Any]], None] | None = None
    raw_change: Callable[[bytes], bytes | None] | None = None
    #: Random changes: a field replaced by any value, removed (``...``) or added.
    changes: dict[str, Any] | None = None

    def value(self) -> bytes | None:
        fields = dict(self.fields)
        for key, new in (self.changes or {}).items():
            if new is ...:
                fields.pop(key, None)
            else:
                fields[key] = new
        raw = msgspec.msgpack.encode(fields)
        return self.raw_change(raw) if self.raw_change is not None else raw


@st.composite
def messages(draw: st.DrawFn) -> Message:
    # Prices and sizes over the whole range a MessagePack integer allows.
    price = draw(st.integers(1, 2**64 - 1))
    quoted = draw(st.booleans()) and price > 2
    fields: dict[str, Any] = {
        "v": 1,
        "symbol": draw(st.sampled_from(["PZA", "PZB", "PZ.C"])),
        "exchange": "XNAS",
        "price_e9": price,
        "size_e9": draw(st.integers(0, 2**64 - 1)),
        "bid_e9": price - 1 if quoted else None,
        "ask_e9": price + 1 if quoted and price < 2**64 - 1 else None,
        "ts_ns": 0,  # set when published: within the last hour
        "source": "",  # the test's own
        "seq": 0,  # unique per test
    }
    shape = draw(st.sampled_from(["good", "field", "raw", "random"]))
    if shape == "field":
        kind, change, under_rules, decode_only = draw(st.sampled_from(FIELD_KINDS))
        return Message(kind, fields, under_rules, decode_only, field_change=change)
    if shape == "raw":
        kind, raw_change, reason = draw(st.sampled_from(RAW_KINDS))
        return Message(kind, fields, reason, reason, raw_change=raw_change)
    if shape == "random":
        keys = st.sampled_from(FIELDS) | st.text(max_size=6).filter(lambda k: k != "source")
        changes = draw(st.dictionaries(keys, msgpack_values | st.just(...), max_size=3))
        return Message("random", fields, None, None, changes=changes)
    return Message("good", fields)


@dataclass
class Run:
    """The running consumer and what the examples have published so far."""

    settings: Settings
    task: asyncio.Task[Any]
    producer: AIOKafkaProducer
    dlq: AIOKafkaConsumer
    pool: asyncpg.Pool
    source: str
    seqs: itertools.count[int]
    decode_only: bool
    #: Every dead letter read so far, by where it came from: (reason, detail, bytes).
    letters: dict[tuple[int, int], tuple[str, str, bytes]] = field(default_factory=dict)


@pytest.fixture
async def run(
    request: pytest.FixtureRequest, isolated: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> AsyncIterator[Run]:
    decode_only = bool(getattr(request, "param", False))
    await ensure_topics(isolated.kafka)
    stop = asyncio.Event()
    validator = DecodeOnly(isolated.validation) if decode_only else None
    task = asyncio.create_task(run_consumer(isolated, stop, validator=validator))
    producer = AIOKafkaProducer(bootstrap_servers=isolated.kafka.bootstrap_servers, acks="all")
    dlq = AIOKafkaConsumer(
        isolated.kafka.dead_letter_topic,
        bootstrap_servers=isolated.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await dlq.start()
    try:
        yield Run(isolated, task, producer, dlq, timescale_pool, f"pz-{test_id}", itertools.count(), decode_only)
    finally:
        stop.set()
        await producer.stop()
        await dlq.stop()
        stats = await asyncio.wait_for(task, 60)  # raises whatever stopped the consumer
        assert stats.consumed == stats.written + stats.rejected


async def publish(run: Run, batch: list[Message]) -> dict[tuple[int, int], tuple[Message, bytes | None]]:
    """Publish ``batch``; returns each record's (partition, offset) with its message and bytes."""
    now = time.time_ns()
    sent = []
    for i, message in enumerate(batch):
        seq = next(run.seqs)
        message.fields.update(source=run.source, seq=seq, ts_ns=now - HOUR_NS + seq * 1000 + i)
        if message.field_change is not None:
            message.field_change(message.fields)
        value = message.value()
        key = message.fields["symbol"].encode(errors="surrogatepass")
        sent.append((message, value, await run.producer.send(run.settings.kafka.ticks_topic, value, key=key)))
    placed = {}
    for message, value, future in sent:
        meta = await future
        placed[(meta.partition, meta.offset)] = (message, value)
    return placed


async def wait_until_consumed(run: Run, placed: dict[tuple[int, int], Any]) -> None:
    """The fact: the database holds this group's offsets past every record."""
    wanted: dict[int, int] = {}
    for partition, offset in placed:
        wanted[partition] = max(wanted.get(partition, 0), offset + 1)
    deadline = time.monotonic() + 60
    while True:
        if run.task.done():
            run.task.result()  # raises what stopped it
            pytest.fail("the consumer stopped")
        rows = await run.pool.fetch(
            "SELECT partition, next_offset FROM ingest_offsets WHERE consumer_group = $1 AND topic = $2",
            run.settings.kafka.consumer_group,
            run.settings.kafka.ticks_topic,
        )
        stored = {r["partition"]: r["next_offset"] or 0 for r in rows}
        if all(stored.get(p, 0) >= off for p, off in wanted.items()):
            return
        assert time.monotonic() < deadline, f"offsets {stored} did not reach {wanted}"
        await asyncio.sleep(0.1)


async def read_dead_letters(run: Run) -> dict[tuple[int, int], tuple[str, str, bytes]]:
    """Every dead letter so far, by where it came from: (reason, detail, bytes)."""
    tps = [TopicPartition(run.settings.kafka.dead_letter_topic, p) for p in range(run.settings.kafka.partitions)]
    end = await run.dlq.end_offsets(tps)
    letters = run.letters
    deadline = time.monotonic() + 30
    while True:
        positions = {tp: await run.dlq.position(tp) for tp in run.dlq.assignment()}
        if len(positions) == len(tps) and all(positions[tp] >= end[tp] for tp in tps):
            return letters
        assert time.monotonic() < deadline, "the dead-letter topic did not give what it holds"
        for records in (await run.dlq.getmany(timeout_ms=200)).values():
            for r in records:
                h = {k: v.decode(errors="replace") for k, v in r.headers}
                where = (int(h[HEADER_PARTITION]), int(h[HEADER_OFFSET]))
                assert where not in letters, f"{where} dead-lettered twice"
                letters[where] = (h[HEADER_REASON], h[HEADER_DETAIL], r.value)


async def check_example(run: Run, batch: list[Message]) -> None:
    placed = await publish(run, batch)
    await wait_until_consumed(run, placed)
    assert not run.task.done()
    rows = await run.pool.fetch(
        "SELECT kafka_partition, kafka_offset, source, source_seq, price FROM stock_prices"
        " WHERE time >= now() - interval '2 hours' AND source = $1"
        " AND (kafka_partition, kafka_offset) IN (SELECT * FROM unnest($2::int[], $3::bigint[]))",
        run.source,
        [p for p, _ in placed],
        [o for _, o in placed],
    )
    stored = {(r["kafka_partition"], r["kafka_offset"]): r for r in rows}
    letters = await read_dead_letters(run)
    for where, (message, value) in placed.items():
        expected = message.expected_decode_only if run.decode_only else message.expected_rules
        row, letter = stored.get(where), letters.get(where)
        assert (row is None) != (letter is None), f"{message.kind} at {where}: stored {row}, dead letter {letter}"
        if letter is not None:
            reason, detail, letter_value = letter
            assert reason in (*REASONS, REJECTED_BY_DATABASE)
            assert detail
            assert letter_value == (value or b"")
        if expected == STORED:
            assert row is not None, f"{message.kind} was dead-lettered: {letter}"
            assert (row["source"], row["source_seq"]) == (run.source, message.fields["seq"])
            assert row["price"] == e9_to_decimal(message.fields["price_e9"])
        elif expected is not None:
            assert letter is not None, f"{message.kind} was stored: {row}"
            assert letter[0] == expected, f"{message.kind}: {letter}"
    dead = sum(1 for where in placed if where in letters)
    assert len(stored) + dead == len(placed)
    # Each good tick once: no second row under its (source, seq).
    seqs = [m.fields["seq"] for m, _ in placed.values() if m.kind == "good"]
    counts = await run.pool.fetch(
        "SELECT source_seq, count(*) AS n FROM stock_prices"
        " WHERE time >= now() - interval '2 hours' AND source = $1 AND source_seq = ANY($2::bigint[])"
        " GROUP BY source_seq",
        run.source,
        seqs,
    )
    assert {r["source_seq"]: r["n"] for r in counts} == dict.fromkeys(seqs, 1)


_EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_EXAMPLES
@given(batch=st.lists(messages(), min_size=1, max_size=25))
async def test_no_record_stops_the_consumer_and_every_record_lands_once(run: Run, batch: list[Message]) -> None:
    await check_example(run, batch)


@pytest.mark.parametrize("run", [True], indirect=True, ids=["decode_only"])
@_EXAMPLES
@given(batch=st.lists(messages(), min_size=1, max_size=25))
async def test_the_database_refuses_row_by_row_what_the_rules_would_have_caught(run: Run, batch: list[Message]) -> None:
    await check_example(run, batch)


@pytest.mark.parametrize("run", [True], indirect=True, ids=["decode_only"])
async def test_a_refused_row_is_dead_lettered_with_the_servers_message(run: Run) -> None:
    """One fixed example of the path above, so that it runs whatever hypothesis draws."""
    fields = {"v": 1, "symbol": "PZA", "exchange": "XNAS", "price_e9": 10**9, "size_e9": 10**9, "bid_e9": None}
    batch = [
        Message("good", {**fields}),
        Message("zero_price", {**fields}, "bad_price", REJECTED_BY_DATABASE, changes={"price_e9": 0}),
        Message("good", {**fields}),
        Message("nul_in_exchange", {**fields}, "bad_text", REJECTED_BY_DATABASE, changes={"exchange": "X\x00"}),
    ]
    await check_example(run, batch)
    letters = await read_dead_letters(run)
    details = sorted(detail for reason, detail, _ in letters.values() if reason == REJECTED_BY_DATABASE)
    assert len(details) == 2
    assert details[0].startswith("CharacterNotInRepertoireError")
    assert "0x00" in details[0]
    assert details[1].startswith("CheckViolationError")
    assert "stock_prices_price_check" in details[1]
