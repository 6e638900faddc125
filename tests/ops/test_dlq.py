"""``nexanest dlq``: replay progress (unit), and inspect/replay against the real Kafka and TimescaleDB."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import asyncpg
import msgspec
import pytest
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.dead_letters import HEADER_REPLAYED_FROM, DeadLetter, ReplayProgress, parse_dead_letter, preview
from nexanest.ops.dlq_inspect import format_inspect, inspect
from nexanest.ops.dlq_replay import ReplayReport, StillFailing, format_replay, replay
from nexanest.ops.topic_reader import BoundedReader
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.pipeline.sinks.dead_letter import HEADER_REASON
from nexanest.schemas.ticks import Tick, encode_tick

REPO = Path(__file__).resolve().parents[2]
WIDE_SYMBOLS = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,31}$"

# -- replay progress (unit) -------------------------------------------------------------


def test_progress_of_a_full_run_moves_the_committed_offset() -> None:
    progress = ReplayProgress()
    assert not progress.examined(0, "bad_symbol")
    progress.advance(10, None)
    assert progress.base == 10
    assert progress.examined(9, "bad_symbol")
    assert not progress.examined(10, "bad_symbol")
    assert progress.metadata() == ""


def test_progress_of_a_limited_run_leaves_other_reasons_for_later() -> None:
    progress = ReplayProgress(base=5)
    progress.advance(20, ["bad_symbol"])
    assert progress.base == 5  # undecodable records in 5..19 have not been looked at
    assert progress.examined(12, "bad_symbol")
    assert not progress.examined(12, "undecodable")
    restored = ReplayProgress.from_committed(OffsetAndMetadata(progress.base, progress.metadata()))
    assert restored == progress
    # A full run later catches up and drops what it has passed.
    restored.advance(15, None)
    assert restored == ReplayProgress(15, {"bad_symbol": 20})
    restored.advance(30, None)
    assert restored == ReplayProgress(30, {})


def test_progress_never_moves_back() -> None:
    progress = ReplayProgress(base=10, ahead={"bad_price": 50})
    progress.advance(8, None)
    progress.advance(40, ["bad_price"])
    assert progress == ReplayProgress(10, {"bad_price": 50})


@pytest.mark.parametrize("metadata", ["", "not json", '{"ahead": 3}', '{"ahead": {"x": "y"}}', "[]"])
def test_progress_survives_foreign_metadata(metadata: str) -> None:
    assert ReplayProgress.from_committed(OffsetAndMetadata(7, metadata)).base == 7


def test_progress_without_a_commit_starts_at_nothing_examined() -> None:
    assert ReplayProgress.from_committed(None) == ReplayProgress()
    assert ReplayProgress.from_committed(OffsetAndMetadata(-1, "")) == ReplayProgress()


def test_preview_is_short_hex_and_repr() -> None:
    assert preview(None) == "(no value)"
    assert preview(b"\x00\xffab") == "4 bytes  hex 00ff6162  b'\\x00\\xffab'"
    long = preview(bytes(range(100)), width=4)
    assert long.startswith("100 bytes  hex 00010203...")
    assert long.endswith("b'\\x00\\x01\\x02\\x03'...")


def test_replay_report_renders() -> None:
    letter = DeadLetter(1, 2, 0, b"K", b"\x00", "undecodable", "x", "ticks", 3, 4, 5)
    report = ReplayReport("ticks.dlq", "ticks", dry_run=True, reasons=None, since_ns=None, examined=2)
    report.republished = {"bad_symbol": 1}
    report.still_failing = {"undecodable": 1}
    report.still_failing_sample = [StillFailing(letter, "undecodable", "boom")]
    text = format_replay(report)
    assert "would re-publish 1  (bad_symbol=1)" in text
    assert "ticks.dlq/1/2  from ticks/3/4  undecodable: boom" in text
    assert "dry run" in text
    assert report.to_json()["still_failing_sample"][0]["origin"] == "ticks/3/4"


# -- against the real services (integration) --------------------------------------------


@pytest.fixture
def dlq_settings(isolated: Settings, test_id: str) -> Settings:
    """``isolated`` with this test's own replay group as well."""
    return isolated.model_copy(
        update={"kafka": isolated.kafka.model_copy(update={"dlq_replay_group": f"test-{test_id}-replay"})}
    )


def widened(settings: Settings) -> Settings:
    """The rule change under test: lower-case and mixed-case symbols become valid."""
    return settings.model_copy(
        update={"validation": settings.validation.model_copy(update={"symbol_pattern": WIDE_SYMBOLS})}
    )


def tick(source: str, seq: int, symbol: str = "GOOD", **changes: int) -> Tick:
    base = Tick(
        symbol=symbol,
        exchange="XNAS",
        price_e9=10 * 10**9 + seq,
        size_e9=10**9,
        ts_ns=time.time_ns() - 10**9 + seq,
        source=source,
        seq=seq,
        bid_e9=9 * 10**9,
        ask_e9=11 * 10**9,
    )
    return msgspec.structs.replace(base, **changes) if changes else base


async def send(
    settings: Settings, messages: list[tuple[bytes, bytes]], headers: dict[int, list[tuple[str, bytes]]] | None = None
) -> list[tuple[int, int]]:
    """Publish in order (message ``i`` with ``headers[i]``, if any); return each
    message's (partition, offset)."""
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    extra = headers or {}
    try:
        sent = [
            await producer.send_and_wait(settings.kafka.ticks_topic, value, key=key, headers=extra.get(i))
            for i, (key, value) in enumerate(messages)
        ]
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in sent]


async def read_all(settings: Settings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    out: list[ConsumerRecord[bytes, bytes]] = []
    async with BoundedReader(settings.kafka, topic) as reader:
        async for batch in reader.batches():
            out.extend(batch)
    return out


async def dead_letters(settings: Settings) -> list[DeadLetter]:
    """The dead-letter topic as it is. The consumer dead-letters at least once (a
    batch it re-reads after a fence is dead-lettered again), so the tests check
    the dead letters by origin and compute counts from what is there; the
    consumer's own statistics are not their subject."""
    return [parse_dead_letter(r) for r in await read_all(settings, settings.kafka.dead_letter_topic)]


@pytest.mark.integration
async def test_replay_republishes_only_what_now_passes_and_only_once(
    dlq_settings: Settings, timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    settings = dlq_settings
    source = f"dlq-{test_id}"
    lower = [encode_tick(tick(source, seq, symbol=sym)) for seq, sym in ((2, "brk.b"), (3, "BRK.b"), (4, "rds.a"))]
    crossed = encode_tick(tick(source, 5, bid_e9=12 * 10**9))
    messages = [
        (b"GOOD", encode_tick(tick(source, 1))),
        (b"brk.b", lower[0]),
        (b"BRK.b", lower[1]),
        (b"GOOD", crossed),
        (b"rds.a", lower[2]),
        (b"junk", b"\xc1\xffnot msgpack"),
        (b"GOOD", encode_tick(tick(source, 6))),
    ]
    # The feed's own headers travel with a dead letter and back on replay; one
    # that poses as ours does not survive as ours.
    traced = [("trace-id", b"t-42"), (HEADER_REASON, b"forged")]
    origins = await send(settings, messages, headers={1: traced})
    await run_consumer(settings, asyncio.Event(), until_idle_s=2.0)
    letters = await dead_letters(settings)
    first = next(d for d in letters if (d.source_partition, d.source_offset) == origins[1])
    assert (first.reason, first.original_headers) == ("bad_symbol", (("trace-id", b"t-42"),))
    assert {(d.source_topic, d.source_partition, d.source_offset): d.reason for d in letters} == {
        (settings.kafka.ticks_topic, *origins[i]): reason
        for i, reason in (
            (1, "bad_symbol"),
            (2, "bad_symbol"),
            (3, "crossed_quote"),
            (4, "bad_symbol"),
            (5, "undecodable"),
        )
    }
    count = Counter(d.reason for d in letters)  # 3, 1, 1 unless the consumer dead-lettered a batch twice

    # inspect: counts by reason, samples that say where each came from.
    seen = await inspect(settings, limit=2)
    assert seen.records == len(letters)
    assert {r: s.count for r, s in seen.by_reason.items()} == dict(count)
    assert seen.not_replayed == len(letters)
    samples = seen.by_reason["bad_symbol"].samples
    assert len(samples) == 2
    assert {s.source_topic for s in samples} == {settings.kafka.ticks_topic}
    assert {(s.key, s.value) for s in samples} <= set(zip([b"brk.b", b"BRK.b", b"rds.a"], lower, strict=True))
    assert all(s.detail.startswith("'") for s in samples)  # the validator's detail: the symbol's repr
    junk = seen.by_reason["undecodable"].samples[0]
    assert junk.value == b"\xc1\xffnot msgpack"
    assert "hex c1ff6e6f74" in format_inspect(seen)

    # A run limited to crossed quotes: still failing, and the other reasons stay for later.
    limited = await replay(settings, reasons=["crossed_quote"])
    assert (limited.examined, limited.republished_total) == (count["crossed_quote"], 0)
    assert limited.not_selected == len(letters) - count["crossed_quote"]
    assert limited.still_failing == {"crossed_quote": count["crossed_quote"]}
    assert limited.still_failing_sample[0].letter.value == crossed
    assert (await inspect(settings)).not_replayed == len(letters) - count["crossed_quote"]

    # A dry run with the wider rule: judges, but sends and commits nothing.
    repeats = {"same origin as a dead letter re-published before it": count["bad_symbol"] - 3}
    ticks_before = len(await read_all(settings, settings.kafka.ticks_topic))
    dry = await replay(widened(settings), dry_run=True)
    assert dry.republished == {"bad_symbol": 3}
    assert dry.passed_over == (repeats if count["bad_symbol"] > 3 else {})
    assert dry.still_failing == {"undecodable": count["undecodable"]}
    assert dry.already_examined == count["crossed_quote"]
    assert len(await read_all(settings, settings.kafka.ticks_topic)) == ticks_before
    assert (await inspect(settings)).not_replayed == len(letters) - count["crossed_quote"]

    # The real run re-publishes exactly the three that now pass, untouched, marked with their origin.
    done = await replay(widened(settings))
    assert done.republished == {"bad_symbol": 3}
    assert done.still_failing == {"undecodable": count["undecodable"]}
    assert (done.examined, done.already_examined) == (len(letters) - count["crossed_quote"], count["crossed_quote"])
    records = await read_all(settings, settings.kafka.ticks_topic)
    replayed = [r for r in records if any(k == HEADER_REPLAYED_FROM for k, _ in r.headers)]
    assert len(records) == ticks_before + 3
    assert sorted((r.key, r.value) for r in replayed) == sorted(zip([b"brk.b", b"BRK.b", b"rds.a"], lower, strict=True))
    at = {f"{settings.kafka.dead_letter_topic}/{d.partition}/{d.offset}": d for d in letters}
    for r in replayed:
        letter = at[dict(r.headers)[HEADER_REPLAYED_FROM].decode()]
        assert (letter.reason, letter.key, letter.value) == ("bad_symbol", r.key, r.value)
        assert [(k, v) for k, v in r.headers if k != HEADER_REPLAYED_FROM] == list(letter.original_headers)
    assert sum(("trace-id", b"t-42") in r.headers for r in replayed) == 1

    # A second replay sends nothing (it starts past every dead letter); the topic still holds them all.
    again = await replay(widened(settings))
    assert (again.examined, again.republished_total, again.still_failing_total) == (0, 0, 0)
    assert "nothing new since the last replay" in format_replay(again)
    assert len(await read_all(settings, settings.kafka.ticks_topic)) == ticks_before + 3
    after = await inspect(settings)
    assert (after.records, after.not_replayed) == (len(letters), 0)

    # The consumer, running the wider rule, ingests the replayed ticks.
    await run_consumer(widened(settings), asyncio.Event(), until_idle_s=2.0)
    rows = await timescale_pool.fetch(
        "SELECT source_seq, symbol FROM stock_prices WHERE source = $1 ORDER BY source_seq", source
    )
    assert [(r["source_seq"], r["symbol"]) for r in rows] == [
        (1, "GOOD"),
        (2, "brk.b"),
        (3, "BRK.b"),
        (4, "rds.a"),
        (6, "GOOD"),
    ]


@pytest.mark.integration
async def test_replay_since_passes_older_dead_letters_over_for_good(dlq_settings: Settings, test_id: str) -> None:
    settings = dlq_settings
    source = f"dlq-since-{test_id}"
    origins = await send(settings, [(b"x", encode_tick(tick(source, seq, symbol="lower"))) for seq in (1, 2)])
    await run_consumer(settings, asyncio.Event(), until_idle_s=1.0)
    letters = await dead_letters(settings)
    assert {(d.source_partition, d.source_offset) for d in letters} == set(origins)

    passed = await replay(widened(settings), since_ns=time.time_ns())
    assert passed.republished_total == 0
    assert passed.passed_over == {"rejected before --since": len(letters)}
    later = await replay(widened(settings))
    assert (later.examined, later.republished_total) == (0, 0)
    assert (await inspect(settings)).not_replayed == 0


@pytest.mark.integration
async def test_dlq_commands(dlq_settings: Settings, test_id: str) -> None:
    settings = dlq_settings
    source = f"dlq-cli-{test_id}"
    origins = await send(settings, [(b"x", encode_tick(tick(source, 1, symbol="lower"))), (b"y", b"\xc1garbage")])
    await run_consumer(settings, asyncio.Event(), until_idle_s=1.0)
    letters = await dead_letters(settings)
    assert {(d.source_partition, d.source_offset): d.reason for d in letters} == {
        origins[0]: "bad_symbol",
        origins[1]: "undecodable",
    }
    count = Counter(d.reason for d in letters)
    env = {**os.environ, **namespace_environment(settings), "NEXANEST_VALIDATION__SYMBOL_PATTERN": WIDE_SYMBOLS}

    async def nexanest(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            str(REPO / ".venv/bin/nexanest"),
            "--env-file",
            str(REPO / ".env"),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, (out.decode() if proc.returncode == 0 else err.decode())

    code, out = await nexanest("dlq", "inspect", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert {r: v["count"] for r, v in doc["by_reason"].items()} == dict(count)
    assert doc["by_reason"]["undecodable"]["samples"][0]["value_preview"].startswith("8 bytes  hex c1676172")

    code, out = await nexanest("dlq", "replay", "--reason", "bad_symbol", "--dry-run")
    assert code == 0, out
    assert "would re-publish 1  (bad_symbol=1)" in out
    code, out = await nexanest("dlq", "replay", "--since", "-1h", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert (doc["republished"], doc["still_failing_by_reason"]) == (1, {"undecodable": count["undecodable"]})
    code, out = await nexanest("dlq", "replay", "--reason", "no_such_reason")
    assert code == 2
    assert "invalid choice" in out
