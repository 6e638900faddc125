"""``nexanest verify``: time arguments, the comparison, and the real thing against Kafka and TimescaleDB."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from array import array
from collections import defaultdict
from pathlib import Path

import asyncpg
import msgspec
import pytest

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.verify import _compare, verify
from nexanest.ops.verify_report import SeqRange, Tally, VerifyReport, format_report
from nexanest.pipeline.kafka import ensure_topics, make_producer
from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.schemas.ticks import Tick, encode_tick

REPO = Path(__file__).resolve().parents[2]
NOW = 1_764_000_000_123_456_789  # 2025-11-24T16:00:00.123456789Z
S = 1_000_000_000

# -- time arguments (unit) ----------------------------------------------------------


def test_compare_counts_missing_duplicates_and_unexpected_by_source_and_seq() -> None:
    report = VerifyReport("t", 0, 1, sources=["a", "b"], sample_ranges=2)
    kafka = {"a": {1, 2, 3, 4, 5, 8}, "b": {1, 2}}
    db = {"a": array("q", [5, 1, 2, 2, 2, 9, 9]), "b": array("q", [2, 1, 3])}
    _compare(report, kafka, db)
    # a: 3, 4 and 8 missing; 2 twice extra; 9 not in Kafka (and doubled). b: 3 not in Kafka.
    assert (report.missing, report.duplicates, report.unexpected) == (3, 3, 2)
    assert report.missing_sample == [SeqRange("a", 3, 4), SeqRange("a", 8, 8)]  # capped at 2 ranges
    assert report.duplicate_sample == [SeqRange("a", 2, 2), SeqRange("a", 9, 9)]
    assert report.unexpected_sample == [SeqRange("a", 9, 9), SeqRange("b", 3, 3)]
    assert not report.ok


def test_compare_a_source_only_on_one_side() -> None:
    report = VerifyReport("t", 0, 1, sources=["a", "b"])
    _compare(report, {"a": {1, 2, 3}}, {"b": array("q", [7, 8])})
    assert (report.missing, report.duplicates, report.unexpected) == (3, 0, 2)
    assert [str(r) for r in report.missing_sample] == ["a:1-3"]
    assert [str(r) for r in report.unexpected_sample] == ["b:7-8"]


def test_compare_identical_sides_is_ok() -> None:
    report = VerifyReport("t", 0, 1, sources=["a"])
    _compare(report, {"a": set(range(1000))}, {"a": array("q", reversed(range(1000)))})
    assert report.ok
    assert (report.missing, report.duplicates, report.unexpected) == (0, 0, 0)


def test_report_renders_as_table_and_json() -> None:
    report = VerifyReport("ticks", NOW, NOW + S, sources=["feed"], kafka_ticks=3, kafka_records=4, db_rows=4)
    report.invalid = {"bad_symbol": 1}
    report.partitions = {0: Tally(3, 30 * S, 4, 40 * S)}
    report.symbols = {"AAPL": Tally(3, 30 * S, 4, 40 * S), "MSFT": Tally()}
    report.duplicates = 1
    report.duplicate_sample = [SeqRange("feed", 7, 7)]
    text = format_report(report)
    assert "FAIL" in text
    assert "feed:7" in text
    assert "bad_symbol=1" in text
    assert "DIFFERS" in text
    doc = report.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["ok"] is False
    assert doc["partitions"]["0"] == {"kafka": 3, "db": 4, "kafka_sum": "30", "db_sum": "40", "matches": False}
    assert doc["from"] == "2025-11-24T16:00:00.123456789Z"


# -- against the real services (integration) --------------------------------------------


async def _send(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    await ensure_topics(settings.kafka)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        futures = [await producer.send(settings.kafka.ticks_topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _tick_messages(ticks: list[Tick]) -> list[tuple[bytes, bytes]]:
    return [(t.symbol.encode(), encode_tick(t)) for t in ticks]


def _sums(ticks: list[Tick]) -> dict[str, tuple[int, int]]:
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t in ticks:
        acc[t.symbol][0] += 1
        acc[t.symbol][1] += t.price_e9
    return {s: (n, p) for s, (n, p) in acc.items()}


@pytest.mark.integration
async def test_verify_finds_missing_duplicated_and_unexpected_ticks(isolated: Settings, test_id: str) -> None:
    source = f"verify-{test_id}"
    start_ns = time.time_ns() - 120 * S
    config = SyntheticConfig(symbols=7, rate=1_000, count=3_000, seed=3, start_ns=start_ns, source=source, paced=False)
    ticks = list(SyntheticFeed(config).generate())  # 1 ms apart: 3 s of ticks
    window = (start_ns, start_ns + 10 * S)
    bad = [
        msgspec.structs.replace(ticks[0], symbol="not valid", seq=900_000 + i, ts_ns=start_ns + i * 1_000_000)
        for i in range(2)
    ]
    await _send(isolated, _tick_messages(ticks[:1_500] + bad + ticks[1_500:]))
    stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=2.0)
    assert (stats.written, stats.rejected) == (3_000, 2)

    # Everything ingested once: ok, and both sides agree per partition and per symbol.
    report = await verify(isolated, isolated.kafka.ticks_topic, *window)
    assert report.ok
    assert report.sources == [source]
    assert (report.kafka_ticks, report.db_rows, report.kafka_records) == (3_000, 3_000, 3_002)
    assert (report.missing, report.duplicates, report.unexpected, report.kafka_repeats) == (0, 0, 0, 0)
    assert report.invalid == {"bad_symbol": 2}  # set aside in the DLQ, not missing
    assert sum(t.kafka for t in report.partitions.values()) == 3_000
    assert all(t.matches for t in report.partitions.values())
    assert {s: (t.kafka, t.kafka_sum_e9) for s, t in report.symbols.items()} == _sums(ticks)
    assert {s: (t.db, t.db_sum_e9) for s, t in report.symbols.items()} == _sums(ticks)

    # The window is [from, to) on ts_ns, the same on both sides.
    sub = (start_ns + 1_000 * 1_000_000, start_ns + 2_000 * 1_000_000)
    inside = [t for t in ticks if sub[0] // 1_000 <= t.ts_ns // 1_000 < sub[1] // 1_000]
    part = await verify(isolated, isolated.kafka.ticks_topic, *sub, source=source)
    assert part.ok
    assert (part.kafka_ticks, part.db_rows) == (len(inside), len(inside)) == (1_000, 1_000)
    assert {s: (t.db, t.db_sum_e9) for s, t in part.symbols.items()} == _sums(inside)

    # Ticks in Kafka that the consumer never took: missing, by (source, seq).
    extra = [
        msgspec.structs.replace(ticks[i], seq=3_000 + i, ts_ns=start_ns + (3_000 + i) * 1_000_000) for i in range(40)
    ]
    await _send(isolated, _tick_messages(extra))
    report = await verify(isolated, isolated.kafka.ticks_topic, *window)
    assert not report.ok
    assert (report.missing, report.duplicates, report.unexpected) == (40, 0, 0)
    assert report.missing_sample == [SeqRange(source, 3_000, 3_039)]
    assert report.kafka_ticks == 3_040
    assert report.db_rows == 3_000

    # A doubled row (1 us later, same source and seq) and a row Kafka never held, written as the owner role.
    conn = await asyncpg.connect(isolated.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute(
            "INSERT INTO stock_prices (time, symbol, price, size, bid, ask, exchange, source, source_seq,"
            " kafka_partition, kafka_offset)"
            " SELECT time + interval '1 microsecond', symbol, price, size, bid, ask, exchange, source, source_seq,"
            " kafka_partition, -1 FROM stock_prices WHERE source = $1 AND source_seq = 5",
            source,
        )
        await conn.execute(
            "INSERT INTO stock_prices (time, symbol, price, size, exchange, source, source_seq,"
            " kafka_partition, kafka_offset) VALUES ($1, 'ZZZ', 1.5, 1, 'XNAS', $2, 777777, 0, -1)",
            (await conn.fetchval("SELECT min(time) FROM stock_prices WHERE source = $1", source)),
            source,
        )
        report = await verify(isolated, isolated.kafka.ticks_topic, *window)
    finally:
        await conn.execute("DELETE FROM stock_prices WHERE source = $1 AND kafka_offset = -1", source)
        await conn.close()
    assert (report.missing, report.duplicates, report.unexpected) == (40, 1, 1)
    assert report.duplicate_sample == [SeqRange(source, 5, 5)]
    assert report.unexpected_sample == [SeqRange(source, 777_777, 777_777)]
    assert report.db_rows == 3_002
    doubled = ticks[5].symbol
    assert report.symbols[doubled].db == report.symbols[doubled].kafka + 1 - sum(
        1 for t in extra if t.symbol == doubled
    )
    assert report.symbols["ZZZ"].db == 1
    assert report.symbols["ZZZ"].db_sum_e9 == 1_500_000_000

    # The command line: the same answer, and exit status 1.
    proc = await asyncio.create_subprocess_exec(
        str(REPO / ".venv/bin/nexanest"),
        "--env-file",
        str(REPO / ".env"),
        "verify",
        "--topic",
        isolated.kafka.ticks_topic,
        "--from",
        str(window[0]),
        "--to",
        str(window[1]),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **namespace_environment(isolated)},
        cwd=REPO,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    doc = json.loads(out)
    assert (doc["missing"], doc["duplicates"], doc["unexpected"]) == (40, 0, 0)  # the injected rows are gone again
    assert doc["missing_sample"] == [f"{source}:3000-3039"]


@pytest.mark.integration
async def test_verify_command_exits_0_when_everything_landed(isolated: Settings, test_id: str) -> None:
    source = f"verify-ok-{test_id}"
    start_ns = time.time_ns() - 60 * S
    config = SyntheticConfig(symbols=3, rate=1_000, count=200, seed=5, start_ns=start_ns, source=source, paced=False)
    await _send(isolated, _tick_messages(list(SyntheticFeed(config).generate())))
    assert (await run_consumer(isolated, asyncio.Event(), until_idle_s=1.0)).written == 200
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nexanest.cli.main",
        "--env-file",
        str(REPO / ".env"),
        "verify",
        "--topic",
        isolated.kafka.ticks_topic,
        "--from",
        "-5m",  # the form argparse alone would take for an option
        "--source",
        source,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **namespace_environment(isolated)},
        cwd=REPO,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()
    text = out.decode()
    assert "result       OK" in text
    assert "200 ticks in the window" in text
    assert "timescaledb  200 rows" in text
