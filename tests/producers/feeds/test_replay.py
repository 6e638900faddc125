"""The replay feed without Kafka: files become exactly the ticks they hold, in
bounded batches, and a replay resumes at the row its checkpoint names (the
checkpoint moving only when a batch is acknowledged)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nexanest.cli.feed import feed_parser
from nexanest.pipeline.settings import Settings
from nexanest.producers.feeds import registry, replay_files
from nexanest.producers.feeds.adapter import FeedAdapter
from nexanest.producers.feeds.replay import ReplayConfig, ReplayFeed
from nexanest.producers.feeds.replay_checkpoints import Checkpoint, read_checkpoint, write_checkpoint
from nexanest.producers.feeds.replay_columns import parse_columns
from nexanest.producers.feeds.replay_files import file_identity
from nexanest.producers.feeds.replay_pace import parse_speed
from nexanest.producers.feeds.replay_progress import estimate_total_rows
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed, interval_ns
from nexanest.schemas.ticks import Tick

START = 1_700_000_000_000_000_000
S = 1_000_000_000


class Observer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.connections: list[str] = []

    async def connected(self, detail: str) -> None:
        self.connections.append(detail)

    async def disconnected(self, reason: str) -> None:
        return None

    async def gap(self, stream: str, expected: int, received: int) -> None:
        return None

    async def malformed(self, reason: str, sample: str) -> None:
        self.rows.append((reason, sample))


def synthetic(count: int) -> list[Tick]:
    config = SyntheticConfig(symbols=7, count=count, start_ns=START, paced=False, tick_interval_ns=S, rate=0)
    return list(SyntheticFeed(config).generate())


def write_parquet(path: Path, ticks: list[Tick], row_group: int) -> None:
    table = pa.table(
        {
            "time": pa.array([t.ts_ns for t in ticks], pa.timestamp("ns", tz="UTC")),
            "sym": [t.symbol for t in ticks],
            "price": [str(t.price_e9 / 1) for t in ticks],  # replaced below: exact decimal text
            "size": pa.array([t.size_e9 // 1_000_000_000 for t in ticks], pa.int64()),
            "bid": [None if t.bid_e9 is None else f"{t.bid_e9 // 10**9}.{t.bid_e9 % 10**9:09d}" for t in ticks],
            "ask": [None if t.ask_e9 is None else f"{t.ask_e9 // 10**9}.{t.ask_e9 % 10**9:09d}" for t in ticks],
            "exchange": [t.exchange for t in ticks],
        }
    )
    table = table.set_column(2, "price", pa.array([f"{t.price_e9 // 10**9}.{t.price_e9 % 10**9:09d}" for t in ticks]))
    pq.write_table(table, path, row_group_size=row_group)


def feed(path: Path, state: Path, **kw: object) -> ReplayFeed:
    columns = parse_columns("ts=time,symbol=sym")
    return ReplayFeed(ReplayConfig(files=(path,), state_dir=state, columns=columns, **kw))  # type: ignore[arg-type]


async def drain(replay: ReplayFeed, ack: int | None = None) -> list[Tick]:
    """Every tick; acknowledge the first ``ack`` batches (all when None)."""
    out: list[Tick] = []
    batches = 0
    await replay.start(Observer())
    async for batch in replay.ticks():
        assert len(batch) <= replay.config.batch_rows
        out.extend(batch)
        batches += 1
        if ack is None or batches <= ack:
            await replay.acknowledged(batch)
    return out


async def test_parquet_rows_become_exactly_their_ticks(tmp_path: Path) -> None:
    ticks = synthetic(2_500)
    path = tmp_path / "t.parquet"
    write_parquet(path, ticks, row_group=1_000)
    replay = feed(path, tmp_path / "state", batch_rows=700)
    _: FeedAdapter = replay
    got = await drain(replay)
    identity = file_identity(path)
    assert [t.seq for t in got] == list(range(2_500))
    assert {t.source for t in got} == {f"replay:{identity}"}
    expected = [(t.symbol, t.exchange, t.price_e9, t.size_e9, t.ts_ns, t.bid_e9, t.ask_e9) for t in ticks]
    assert [(t.symbol, t.exchange, t.price_e9, t.size_e9, t.ts_ns, t.bid_e9, t.ask_e9) for t in got] == expected
    assert got[-1].ts_ns - got[0].ts_ns == 2_499 * S  # --tick-interval 1s: 2,500 ticks span 41 minutes
    checkpoint = read_checkpoint(tmp_path / "state", identity)
    assert checkpoint is not None
    assert (checkpoint.rows, checkpoint.done) == (2_500, True)
    assert replay.ts_range == (START, START + 2_499 * S)
    # Done: a second run publishes nothing.
    assert await drain(feed(path, tmp_path / "state", batch_rows=700)) == []


async def test_resumes_at_the_acknowledged_row(tmp_path: Path) -> None:
    ticks = synthetic(3_000)
    path = tmp_path / "t.parquet"
    write_parquet(path, ticks, row_group=1_000)
    state = tmp_path / "state"
    first = await drain(feed(path, state, batch_rows=400), ack=3)  # 1,200 rows acknowledged, the rest not
    assert len(first) == 3_000
    checkpoint = read_checkpoint(state, file_identity(path))
    assert checkpoint is not None
    assert checkpoint.rows == 1_200
    resumed = await drain(feed(path, state, batch_rows=400))
    assert [t.seq for t in resumed] == list(range(1_200, 3_000))  # no gap, nothing before the checkpoint
    assert [t.price_e9 for t in resumed] == [t.price_e9 for t in ticks[1_200:]]
    assert [t.seq for t in await drain(feed(path, state, restart=True))] == list(range(3_000))


async def test_csv_with_text_decimals_iso_times_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "when,ticker,px,qty\n"
        "2024-01-02T03:04:05.123456789Z,aapl,187.25,100\n"
        "2024-01-02T03:04:06Z,MSFT,0.1,0.000000001\n"
        "2024-01-02T03:04:07Z,MSFT,1.0000000001,5\n"  # too precise: refused, never rounded
        "not a time,MSFT,1,5\n"
        "2024-01-02T03:04:08+01:00,MSFT,2,\n"  # no size
        "2024-01-02T03:04:09Z,IBM,1e2,3\n"
    )
    replay = ReplayFeed(
        ReplayConfig(
            files=(path,),
            state_dir=tmp_path / "state",
            columns=parse_columns("ts=when,symbol=ticker,price=px,size=qty"),
        )
    )
    observer = Observer()
    await replay.start(observer)
    got = [t async for batch in replay.ticks() for t in batch]
    assert [(t.seq, t.symbol, t.price_e9, t.size_e9, t.exchange) for t in got] == [
        (0, "AAPL", 187_250_000_000, 100_000_000_000, "replay"),
        (1, "MSFT", 100_000_000, 1, "replay"),
        (5, "IBM", 100_000_000_000, 3_000_000_000, "replay"),
    ]
    assert got[0].ts_ns == 1_704_164_645_123_456_789
    assert [reason for reason, _ in observer.rows] == ["too_precise", "bad_timestamp", "missing_value"]
    assert "row 2" in observer.rows[0][1]
    assert replay.health().rejected == 3


def test_options() -> None:
    assert parse_columns("ts=time, price=px")["price"] == "px"
    assert parse_columns("")["symbol"] == "symbol"
    with pytest.raises(argparse.ArgumentTypeError):
        parse_columns("volume=qty")
    assert parse_speed("max") is None
    assert parse_speed("2.5") == 2.5
    for bad in ("0", "-1", "fast", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_speed(bad)
    assert [interval_ns(t) for t in ("1s", "250ms", "1.5s", "100us", "2m")] == [S, S // 4, 3 * S // 2, 100_000, 120 * S]
    with pytest.raises(argparse.ArgumentTypeError):
        interval_ns("1 day")


async def test_paced_replay_follows_tick_time(tmp_path: Path) -> None:
    """--speed 10: 3 s of tick time (4 ticks 1 s apart) take about 0.3 s."""
    import time

    ticks = synthetic(4)
    path = tmp_path / "t.parquet"
    write_parquet(path, ticks, row_group=2)
    replay = feed(path, tmp_path / "state", speed=10.0)
    started = time.monotonic()
    got = await drain(replay)
    elapsed = time.monotonic() - started
    assert len(got) == 4
    assert 0.29 <= elapsed < 0.9  # paced, neither ahead of tick time nor far behind it (3x)


async def test_csv_epoch_integers_by_format_or_magnitude(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("ts,symbol,price,size\n1700000000,A,1,1\n1700000000123,A,1,1\n1700000000123456,A,1,1\n")
    for ts_format, expected in (
        ("auto", [1_700_000_000 * S, 1_700_000_000_123_000_000, 1_700_000_000_123_456_000]),
        ("ms", [1_700_000_000_000_000, 1_700_000_000_123 * 10**6, 1_700_000_000_123_456 * 10**6]),
    ):
        replay = ReplayFeed(
            ReplayConfig(files=(path,), state_dir=tmp_path / ts_format, columns=parse_columns(""), ts_format=ts_format)
        )
        observer = Observer()
        await replay.start(observer)
        got = [t async for batch in replay.ticks() for t in batch]
        if ts_format == "ms":  # the last one is beyond the 64-bit ns range in ms: malformed, not wrapped
            assert [r for r, _ in observer.rows] == ["bad_timestamp"]
            expected = expected[:2]
        assert [t.ts_ns for t in got] == expected


async def test_symbol_map_renames_a_files_symbols(tmp_path: Path) -> None:
    """``--symbol-map`` as on the venue feeds (one parser): mapped by the upper-case
    form, the others keep theirs; a name the consumer would refuse stops the command."""
    path = tmp_path / "t.csv"
    path.write_text("ts,symbol,price,size\n1700000000,btcusdt,1,1\n1700000001,ETHUSDT,2,1\n1700000002,xrp,3,1\n")
    plugin = registry.load("replay")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    options = feed_parser("replay", plugin).parse_args(
        [str(path), "--state-dir", str(tmp_path / "state"), "--symbol-map", "BTCUSDT=BTC-USDT, ethusdt=ETH-USDT"]
    )
    replay = plugin.create(options, settings)
    assert isinstance(replay, ReplayFeed)
    await replay.start(Observer())
    assert [t.symbol async for batch in replay.ticks() for t in batch] == ["BTC-USDT", "ETH-USDT", "XRP"]
    refused = feed_parser("replay", plugin).parse_args([str(path), "--symbol-map", "BTCUSDT=btc usdt"])
    with pytest.raises(ValueError, match="btc usdt"):
        plugin.create(refused, settings)
    with pytest.raises(SystemExit):
        feed_parser("replay", plugin).parse_args([str(path), "--symbol-map", "BTCUSDT"])


def test_estimate_of_the_total_rows_from_the_bytes_read() -> None:
    assert estimate_total_rows(0, 0, 1_000) is None  # nothing read: no estimate
    assert estimate_total_rows(250, 250.0, 1_000) == 1_000
    assert estimate_total_rows(30, 25.0, 100) == 120
    assert estimate_total_rows(400, 1_000.0, 1_000) == 400  # all read: exact
    assert estimate_total_rows(10, 1e-9, 100) == 10**12
    assert estimate_total_rows(10, 99.999, 100) == 10  # never below the rows read


async def test_csv_progress_estimates_the_total_from_the_bytes_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV has no row count: the total (for the progress bar's ETA) is extrapolated
    from the bytes the rows read so far took, close from the first block on, exact at the end."""
    monkeypatch.setattr(replay_files, "CSV_BLOCK_BYTES", 32 << 10)  # many blocks from a small file
    count = 20_000
    path = tmp_path / "t.csv"
    lines = (f"{1_700_000_000 + i},S{i % 7},{100 + i % 977}.{i % 100:02d},{1 + i % 13}" for i in range(count))
    path.write_text("ts,symbol,price,size\n" + "\n".join(lines) + "\n")
    assert path.stat().st_size > 12 * (32 << 10)
    replay = ReplayFeed(ReplayConfig(files=(path,), state_dir=tmp_path / "state", columns=parse_columns("")))
    assert (replay.total_rows, replay.rows_done) == (None, 0)  # nothing read yet
    await replay.start(Observer())
    assert replay.total_estimated
    estimates: list[int | None] = []
    async for batch in replay.ticks():
        await replay.acknowledged(batch)
        estimates.append(replay.total_rows)
    assert len(estimates) > 8
    assert all(e is not None and abs(e - count) <= count * 0.02 for e in estimates), estimates
    assert replay.total_rows == replay.rows_done == count

    # Resumed halfway: the rows skipped count with the bytes they take.
    saved = read_checkpoint(tmp_path / "state", file_identity(path))
    assert saved is not None
    resumed = ReplayFeed(ReplayConfig(files=(path,), state_dir=tmp_path / "resume", columns=parse_columns("")))
    write_checkpoint(tmp_path / "resume", Checkpoint(saved.identity, str(path), count // 2))
    await resumed.start(Observer())
    batches = [b async for b in resumed.ticks()]
    assert batches[0][0].seq == count // 2
    assert resumed.total_rows is not None
    assert resumed.total_rows == resumed.rows_done == count


def test_parquet_progress_has_the_exact_total(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(path, synthetic(50), row_group=10)
    replay = feed(path, tmp_path / "state")
    asyncio.run(replay.start(Observer()))
    assert (replay.total_rows, replay.total_estimated) == (50, False)
