"""Issue 14, done when: a year-old Parquet file of 1,000,000 ticks is backfilled
through Kafka and the consumer, interrupted once by ``kill -9`` of
``nexanest feed run replay`` after its first checkpoint and resumed; then
``nexanest verify`` passes over the range and the 1-minute bars equal a GROUP
BY over ``stock_prices``. It also measures the backfill rate (file to table)
and the live pipeline's rate in the same run (printed; ``-s`` shows them).

A smaller case does the same on the community (Timescale) edition: the
backfilled buckets lie below the continuous aggregates' watermark, so they are
refreshed over the backfilled range explicitly (``nexanest bars repair``, as
``feed run replay`` tells the operator) instead of waiting for the policy.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import asyncpg
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.bars import repair_bars
from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.settings import Settings
from nexanest.producers.feed_runner import run_feed
from nexanest.producers.feeds.adapter import FeedHealth, FeedObserver
from nexanest.producers.feeds.replay_checkpoints import read_checkpoint
from nexanest.producers.feeds.replay_files import file_identity
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed, symbol_names
from nexanest.schemas.ticks import Tick
from tests.nexanest_cli import run_nexanest, spawn_nexanest
from tests.producers.feeds.venue_server import until

S = 1_000_000_000
YEAR_NS = 365 * 24 * 3600 * S
COLUMNS = "ts=time,symbol=sym,price=price_e9,size=size_e9,bid=bid_e9,ask=ask_e9,exchange=venue"

# The 1-minute bars of the view against a plain GROUP BY over the raw ticks (open and
# close by an ordered aggregate, independent of the implementations' first()/last()).
_BARS = """
SELECT bucket, symbol, open, high, low, close, volume, trade_count, vwap
  FROM ohlcv_1m WHERE symbol = ANY($1::text[]) ORDER BY symbol, bucket
"""
_REFERENCE = """
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, symbol,
       (array_agg(price ORDER BY time, source_seq))[1], max(price), min(price),
       (array_agg(price ORDER BY time DESC, source_seq DESC))[1],
       sum(size), count(*), (sum(price * size) / NULLIF(sum(size), 0))::NUMERIC(20, 9)
  FROM stock_prices WHERE symbol = ANY($1::text[])
 GROUP BY 1, 2 ORDER BY symbol, bucket
"""


def year_old_ticks(test_id: str, count: int, symbols: int) -> tuple[Iterator[Tick], list[str]]:
    """Synthetic ticks starting a year ago, 200 ms of tick time apart (1M span 2.3 days),
    under symbols of this test only (the bars are compared per symbol)."""
    prefix = f"BF{test_id[:8].upper()}"
    config = SyntheticConfig(
        symbols=symbols,
        count=count,
        rate=0,
        paced=False,
        seed=14,
        start_ns=(time.time_ns() - YEAR_NS) // S * S,
        tick_interval_ns=S // 5,
        source="unused",
    )
    names = [f"{prefix}{i:04d}" for i in range(symbols)]
    renamed = {f"SYN{i:04d}": name for i, name in enumerate(names)}
    ticks = (
        Tick(renamed[t.symbol], t.exchange, t.price_e9, t.size_e9, t.ts_ns, t.source, t.seq, t.bid_e9, t.ask_e9)
        for t in SyntheticFeed(config).generate()
    )
    return ticks, names


def write_parquet(path: Path, ticks: Iterator[Tick], row_group: int = 100_000) -> tuple[int, int, int]:
    """Stream ``ticks`` into a Parquet file, one row group at a time; return (rows, first ns, last ns)."""
    schema = pa.schema(
        [
            ("time", pa.timestamp("ns", tz="UTC")),
            ("sym", pa.string()),
            ("price_e9", pa.int64()),
            ("size_e9", pa.int64()),
            ("bid_e9", pa.int64()),
            ("ask_e9", pa.int64()),
            ("venue", pa.string()),
        ]
    )
    rows, first, last = 0, None, 0
    with pq.ParquetWriter(path, schema) as writer:
        while True:
            chunk = [t for _, t in zip(range(row_group), ticks, strict=False)]
            if not chunk:
                break
            first = chunk[0].ts_ns if first is None else first
            last = chunk[-1].ts_ns
            rows += len(chunk)
            columns = [
                [t.ts_ns for t in chunk],
                [t.symbol for t in chunk],
                [t.price_e9 for t in chunk],
                [t.size_e9 for t in chunk],
                [t.bid_e9 for t in chunk],
                [t.ask_e9 for t in chunk],
                [t.exchange for t in chunk],
            ]
            writer.write_table(pa.table(dict(zip(schema.names, columns, strict=True)), schema=schema))
    assert first is not None
    return rows, first, last


async def replay(settings: Settings, path: Path, state: Path, *extra: str) -> asyncio.subprocess.Process:
    return await spawn_nexanest(
        settings,
        "feed",
        "run",
        "replay",
        str(path),
        "--columns",
        COLUMNS,
        "--int-scale",
        "e9",
        "--state-dir",
        str(state),
        *extra,
    )


async def rows_of(pool: asyncpg.Pool, source: str, first_ns: int, last_ns: int) -> int:
    """Rows of ``source`` among those of tick time ``first_ns .. last_ns``: no index
    leads with ``source``, so the time range (chunk exclusion, the BRIN index on
    time) keeps each poll to the test's own hours instead of the whole table."""
    query = "SELECT count(*) FROM stock_prices WHERE time BETWEEN $2 AND $3 AND source = $1"
    return int(await pool.fetchval(query, source, ns_to_datetime(first_ns), ns_to_datetime(last_ns + 1_000)))


async def verify_range(settings: Settings, first_ns: int, last_ns: int) -> dict[str, object]:
    args = ["--topic", settings.kafka.backfill_topic, "--from", str(first_ns), "--to", str(last_ns + 1_000)]
    code, out, err = await run_nexanest(settings, "verify", *args, "--json")
    assert code == 0, (out + err)[-3000:]
    report: dict[str, object] = json.loads(out)
    return report


async def assert_bars_exact(pool: asyncpg.Pool, symbols: list[str]) -> int:
    expected = [tuple(r) for r in await pool.fetch(_REFERENCE, symbols)]
    actual = [tuple(r) for r in await pool.fetch(_BARS, symbols)]
    assert expected, "no ticks written"
    assert len(actual) == len(expected)
    assert actual == expected
    return len(expected)


async def cleanup(admin_dsn: str, source: str, symbols: list[str], first_ns: int, last_ns: int) -> None:
    """The test's history is a year old: remove it so that runs do not pile it up
    (by its time range too, as ``rows_of``, and its own symbols' bars)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            "DELETE FROM stock_prices WHERE time BETWEEN $2 AND $3 AND source = $1",
            source,
            ns_to_datetime(first_ns),
            ns_to_datetime(last_ns + 1_000),
        )
        for table in ("ohlcv_1m_rollup", "ohlcv_5m_rollup", "ohlcv_1h_rollup", "ohlcv_1d_rollup"):
            if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
                await conn.execute(f"DELETE FROM {table} WHERE symbol = ANY($1::text[])", symbols)
    finally:
        await conn.close()


@pytest.mark.integration
@pytest.mark.timeout(900)  # ~2.5 min alone; a machine shared with other sessions can triple it
async def test_backfill_a_million_year_old_ticks_killed_and_resumed(
    isolated: Settings, test_id: str, tmp_path: Path, timescale_pool: asyncpg.Pool
) -> None:
    count = 1_000_000
    path, state = tmp_path / "history.parquet", tmp_path / "state"
    ticks, symbols = year_old_ticks(test_id, count, symbols=20)
    rows, first_ns, last_ns = write_parquet(path, ticks)
    assert rows == count
    assert time.time_ns() - first_ns > 360 * 24 * 3600 * S  # a year old: stale for the live topic
    source = f"replay:{file_identity(path)}"

    stop = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(isolated, stop))
    try:
        started = time.monotonic()
        proc = await replay(isolated, path, state)

        async def checkpointed() -> bool:
            saved = read_checkpoint(state, file_identity(path))
            return saved is not None and saved.rows > 0

        await until(checkpointed, "the first checkpoint", 120, every_s=0.05)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        killed_at = read_checkpoint(state, file_identity(path))
        assert killed_at is not None
        assert 0 < killed_at.rows < count, "the replay must be interrupted midway"

        resumed = await replay(isolated, path, state)
        out, err = await resumed.communicate()
        assert resumed.returncode == 0, (out + err).decode()[-3000:]
        assert "nexanest bars repair --from" in out.decode()  # the range to refresh, for the Timescale edition
        done = read_checkpoint(state, file_identity(path))
        assert done is not None
        assert done.done

        async def all_written() -> bool:
            return await rows_of(timescale_pool, source, first_ns, last_ns) >= count

        await until(all_written, "every backfilled tick in stock_prices", 540, every_s=1.0)
        backfill_s = time.monotonic() - started
        # Exactly once despite the re-sent rows.
        assert await rows_of(timescale_pool, source, first_ns, last_ns) == count

        # The live pipeline's rate in the same run: unpaced synthetic ticks, stamped now.
        live_count = 200_000
        live_config = SyntheticConfig(symbols=20, count=live_count, rate=0, paced=False, source=f"live-{test_id}")
        live_feed = SyntheticFeed(live_config)
        live_first = live_feed.start_ns
        live_last = live_first + live_count * live_config.step_ns
        live_started = time.monotonic()
        assert await run_feed(isolated, live_feed, asyncio.Event(), emit_events=False) == live_count

        async def live_written() -> bool:
            return await rows_of(timescale_pool, live_config.source, live_first, live_last) >= live_count

        await until(live_written, "the live ticks in stock_prices", 180, every_s=0.5)
        live_s = time.monotonic() - live_started
    finally:
        stop.set()
        await consumer
    print(
        f"\nbackfill: {count:,} ticks file -> table in {backfill_s:.1f}s = {count / backfill_s:,.0f} ticks/s "
        f"(including the kill -9 and resume); live: {live_count:,} ticks producer -> table in {live_s:.1f}s = "
        f"{live_count / live_s:,.0f} ticks/s"
    )

    try:
        report = await verify_range(isolated, first_ns, last_ns)
        assert (report["missing"], report["duplicates"]) == (0, 0)
        bars = await assert_bars_exact(timescale_pool, symbols)
        assert bars > 10_000
    finally:
        await cleanup(isolated.timescale.admin_dsn.get_secret_value(), source, symbols, first_ns, last_ns)


@pytest.mark.integration
@pytest.mark.timescale_license
async def test_backfilled_bars_on_the_timescale_edition(community: Settings, test_id: str, tmp_path: Path) -> None:
    """Continuous aggregates: refreshed over the backfilled range by ``bars repair``."""
    settings = community.model_copy(
        update={
            "kafka": community.kafka.model_copy(
                update={
                    "ticks_topic": f"test.{test_id}.ticks",
                    "dead_letter_topic": f"test.{test_id}.ticks.dlq",
                    "events_topic": f"test.{test_id}.events",
                    "backfill_topic": f"test.{test_id}.ticks.backfill",
                    "consumer_group": f"test.{test_id}",
                }
            ),
            "metrics": community.metrics.model_copy(update={"port": 0}),
        }
    )
    count = 20_000
    path, state = tmp_path / "history.parquet", tmp_path / "state"
    ticks, symbols = year_old_ticks(test_id, count, symbols=5)
    _, first_ns, last_ns = write_parquet(path, ticks, row_group=5_000)
    source = f"replay:{file_identity(path)}"
    pool = await asyncpg.create_pool(settings.timescale.dsn.get_secret_value(), min_size=1, max_size=2)
    assert pool is not None
    stop = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(settings, stop))
    try:
        # As in production, live ticks whose bars are materialised: the aggregates'
        # watermark is near now, so real-time aggregation does not cover the history.
        now = time.time_ns()
        live = SyntheticConfig(symbols=2, count=100, rate=0, paced=False, start_ns=now - 600 * S, source=f"l-{test_id}")
        assert await run_feed(settings, SyntheticFeed(live), asyncio.Event(), emit_events=False) == 100

        async def live_written() -> bool:
            return await rows_of(pool, live.source, now - 600 * S, now) >= 100

        await until(live_written, "the live ticks", 60, every_s=0.5)
        await repair_bars(settings, now - 3600 * S, now, None)
        proc = await replay(settings, path, state)
        out, err = await proc.communicate()
        assert proc.returncode == 0, (out + err).decode()[-3000:]

        async def all_written() -> bool:
            return await rows_of(pool, source, first_ns, last_ns) >= count

        await until(all_written, "every backfilled tick in stock_prices", 120, every_s=0.5)
        stop.set()
        await consumer
        # Below the watermark: the refresh policy (start_offset NULL) would materialise the
        # backfilled buckets within its minute; the explicit refresh makes it now.
        await repair_bars(settings, first_ns, last_ns + 1_000, None)
        await assert_bars_exact(pool, symbols)
        report = await verify_range(settings, first_ns, last_ns)
        assert (report["missing"], report["duplicates"]) == (0, 0)
    finally:
        stop.set()
        await consumer
        await pool.close()
        await cleanup(settings.timescale.admin_dsn.get_secret_value(), source, symbols, first_ns, last_ns)


@pytest.mark.integration
async def test_history_is_written_from_the_backfill_topic_and_refused_on_the_live_one(
    isolated: Settings, test_id: str, timescale_pool: asyncpg.Pool
) -> None:
    """The same year-old ticks: through the backfill topic they are stored; from a live
    feed (the ticks topic) they are dead-lettered as ``stale_timestamp``."""
    ticks, symbols = year_old_ticks(test_id, 500, symbols=3)
    sources = (f"bf-{test_id}", f"lv-{test_id}")
    history = [msgspec.structs.replace(t, source=sources[t.seq % 2]) for t in ticks]
    first_ns, last_ns = history[0].ts_ns, history[-1].ts_ns
    backfilled = [t for t in history if t.source == sources[0]]
    lived = [t for t in history if t.source == sources[1]]
    assert await run_feed(isolated, ListFeed(backfilled, backfill=True), asyncio.Event(), emit_events=False) == 250
    assert await run_feed(isolated, ListFeed(lived, backfill=False), asyncio.Event(), emit_events=False) == 250
    try:
        stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=2.0)
        assert stats.rejected_by_reason == {"stale_timestamp": 250}
        assert await rows_of(timescale_pool, sources[0], first_ns, last_ns) == 250
        assert await rows_of(timescale_pool, sources[1], first_ns, last_ns) == 0
        stored = await timescale_pool.fetchval(
            "SELECT consumer_group FROM ingest_offsets WHERE topic = $1 LIMIT 1", isolated.kafka.backfill_topic
        )
        assert stored == f"{isolated.kafka.consumer_group}.backfill"  # its own offsets: no fencing of the live loop
    finally:
        await cleanup(isolated.timescale.admin_dsn.get_secret_value(), sources[0], symbols, first_ns, last_ns)


class ListFeed:
    """Ticks from a list, as a live feed or a backfill (``is_backfill``)."""

    name: ClassVar[str] = "list"
    venue: ClassVar[str] = "test"

    def __init__(self, ticks: list[Tick], *, backfill: bool) -> None:
        self._ticks, self.backfill = ticks, backfill

    async def start(self, observer: FeedObserver) -> None:
        await observer.connected("list")

    async def ticks(self) -> AsyncIterator[Sequence[Tick]]:
        yield self._ticks

    async def stop(self) -> None:
        return None

    def health(self) -> FeedHealth:
        return FeedHealth(connected=True, ticks=len(self._ticks))


@pytest.mark.integration
async def test_ctrl_c_checkpoints_exactly_what_kafka_acknowledged(
    isolated: Settings, test_id: str, tmp_path: Path
) -> None:
    """SIGINT: the batches in flight are acknowledged and checkpointed before exit, so the
    resumed run re-sends nothing: the topic holds every row exactly once."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    count = 30_000
    path, state = tmp_path / "history.parquet", tmp_path / "state"
    ticks, _ = year_old_ticks(test_id, count, symbols=4)
    write_parquet(path, ticks, row_group=5_000)
    # 30,000 rows 200 ms apart are 6,000 s of tick time: at --speed 1000, about 6 s.
    proc = await replay(isolated, path, state, "--speed", "1000")

    async def checkpointed() -> bool:
        saved = read_checkpoint(state, file_identity(path))
        return saved is not None and saved.rows > 0

    await until(checkpointed, "the first checkpoint", 60, every_s=0.05)
    proc.send_signal(signal.SIGINT)
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode()[-3000:]
    stopped = read_checkpoint(state, file_identity(path))
    assert stopped is not None
    assert 0 < stopped.rows < count
    assert f"published {stopped.rows:,} ticks" in out.decode()  # exactly what it checkpointed

    resumed = await replay(isolated, path, state)
    out, err = await resumed.communicate()
    assert resumed.returncode == 0, (out + err).decode()[-3000:]
    assert f"published {count - stopped.rows:,} ticks" in out.decode()

    topic = isolated.kafka.backfill_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=isolated.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    seqs: list[int] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(isolated.kafka.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + 60
        while len(seqs) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                seqs.extend(msgspec.msgpack.decode(r.value)["seq"] for r in records if r.value is not None)
    finally:
        await consumer.stop()
    assert sorted(seqs) == list(range(count))  # every row once: no gap, no repeat


@pytest.mark.integration
async def test_synthetic_history_is_stored_over_its_hours(
    isolated: Settings, test_id: str, timescale_pool: asyncpg.Pool
) -> None:
    """The README's synthetic history, smaller: ``feed run synthetic --rate 0
    --tick-interval .. --end-now`` lays 12 hours out up to now and publishes them to
    the backfill topic, where every tick is stored and none dead-lettered (on the
    live topic those older than 7 days would be ``stale_timestamp``; from now on,
    every tick past 5 s would be ``future_timestamp``)."""
    count, step_s, source = 2_400, 18, f"syn-{test_id}"
    symbols = symbol_names(4, f"SH{test_id[:6].upper()}")
    started_ns = time.time_ns()
    code, out, err = await run_nexanest(
        isolated,
        *("feed", "run", "synthetic", "--rate", "0", "--count", str(count), "--tick-interval", f"{step_s}s"),
        *("--end-now", "--symbols", "4", "--symbol-prefix", symbols[0][:-4], "--source", source),
    )
    ended_ns = time.time_ns()
    assert code == 0, (out + err)[-3000:]
    assert f"-> Kafka {isolated.kafka.backfill_topic}" in err
    assert f"published {count:,} ticks" in out
    assert "nexanest bars repair --from" in out  # the range to refresh on the Timescale edition
    first_ns = started_ns - (count - 1) * step_s * S
    try:
        stats = await run_consumer(isolated, asyncio.Event(), until_idle_s=2.0)
        assert (stats.written, stats.rejected, stats.rejected_by_reason) == (count, 0, {})
        assert await rows_of(timescale_pool, source, first_ns, ended_ns) == count
        low, high, spread = await timescale_pool.fetchrow(
            "SELECT min(time), max(time), count(DISTINCT symbol) FROM stock_prices"
            " WHERE time BETWEEN $2 AND $3 AND source = $1",
            source,
            ns_to_datetime(first_ns),
            ns_to_datetime(ended_ns),
        )
        assert (high - low).total_seconds() == (count - 1) * step_s  # 12 hours of tick time, to the second
        assert ns_to_datetime(started_ns) <= high <= ns_to_datetime(ended_ns)  # the last tick at "now"
        assert spread == 4
    finally:
        await cleanup(isolated.timescale.admin_dsn.get_secret_value(), source, symbols, first_ns, ended_ns)
