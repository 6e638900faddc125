"""``nexanest bars``: arguments and formatting (unit), reading and repairing
through the command against the real TimescaleDB, on each edition's own cluster
(integration)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from nexanest.cli.main import EXIT_OK, EXIT_USAGE, _join_time_values, build_parser, cmd_bars
from nexanest.ops.bars import BarRow, format_bars
from nexanest.pipeline.edition import detect_edition
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.schemas.ticks import Tick

S = 10**9
T0 = datetime(2025, 2, 3, 14, 30, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * S


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(_join_time_values(argv))


def test_bars_arguments() -> None:
    args = parse("bars", "AAPL", "--interval", "5m", "--from", "-2h", "--json")
    assert (args.target, args.interval, args.json, args.symbol) == ("AAPL", "5m", True, None)
    assert args.from_ns < args.to_ns
    args = parse("bars", "repair", "--from", "2025-02-03", "--to", "2025-02-04", "--symbol", "AAPL")
    assert (args.target, args.symbol) == ("repair", "AAPL")
    assert args.from_ns == int(datetime(2025, 2, 3, tzinfo=UTC).timestamp()) * S
    assert parse("bars", "AAPL", "--from", "-1d").interval == "1m"


def test_every_resolution_is_an_interval() -> None:
    for resolution in RESOLUTIONS:
        assert parse("bars", "AAPL", "--from", "-1h", "--interval", resolution).interval == resolution


@pytest.mark.parametrize("argv", [("bars", "AAPL"), ("bars", "AAPL", "--from", "-1h", "--interval", "2m")])
def test_bad_bars_arguments_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == EXIT_USAGE
    assert "error" in capsys.readouterr().err


def test_bars_print_exact_numbers_without_padding_zeros() -> None:
    bar = BarRow(T0, "AAPL", Decimal("187.250000000"), Decimal("188.000000001"), Decimal("187"), Decimal("187.5"),
                 Decimal("1200.000000000"), 3, None)  # fmt: skip
    assert bar.to_json() == {
        "bucket": "2025-02-03T14:30:00Z",
        "symbol": "AAPL",
        "open": "187.25",
        "high": "188.000000001",
        "low": "187",
        "close": "187.5",
        "volume": "1200",
        "trade_count": 3,
        "vwap": None,
    }
    header, line = format_bars([bar], "1m").splitlines()
    assert header.split() == ["bucket", "(UTC)", "open", "high", "low", "close", "volume", "trades", "vwap"]
    assert line.split() == ["2025-02-03", "14:30", "187.25", "188.000000001", "187", "187.5", "1200", "3"]
    assert format_bars([bar], "1d").splitlines()[1].split()[0] == "2025-02-03"


@pytest.fixture
async def apache_only(timescale_pool: asyncpg.Pool) -> None:
    """The Apache cluster is what ``timescale_pool`` reaches; anything else is a broken set-up, not a skip."""
    edition = await detect_edition(timescale_pool)
    assert edition == "apache", f"writes bars through the pipeline's rollups; this server's edition is {edition}"


@pytest.mark.integration
@pytest.mark.usefixtures("apache_only")
async def test_bars_command_reads_the_view_and_repair_is_recorded(
    migrated: Settings, timescale_pool: asyncpg.Pool, test_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source, symbol = f"bars-{test_id}", f"BARS{test_id.upper()}"
    offsets = OffsetStore(timescale_pool, f"g-{test_id}")
    sink = TimescaleSink(timescale_pool, offsets, rollups=True)
    # 14:30:10, 14:31:50, 14:36:50: two 5m buckets, three 1m buckets.
    sink.write(
        [(Tick(symbol, "X", (100 + i) * S, S, T0_NS + (10 + 100 * i * i) * S, source, i), 0, i) for i in range(3)]
    )
    await sink.flush()

    # A range that starts inside a bucket still shows that bucket.
    args = parse("bars", symbol, "--interval", "5m", "--from", "2025-02-03T14:33:00Z", "--to", "2025-02-03T15:00Z")
    assert await cmd_bars(migrated, args) == EXIT_OK
    args.json = True
    assert await cmd_bars(migrated, args) == EXIT_OK
    *table, as_json = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in table] == [
        ["bucket", "(UTC)", "open"],
        ["2025-02-03", "14:30", "100"],
        ["2025-02-03", "14:35", "102"],
    ]
    assert [(b["bucket"], b["open"], b["close"], b["trade_count"]) for b in json.loads(as_json)] == [
        ("2025-02-03T14:30:00Z", "100", "101", 2),
        ("2025-02-03T14:35:00Z", "102", "102", 1),
    ]

    args = parse("bars", "repair", "--from", "2025-02-03T14:00Z", "--to", "2025-02-03T15:00Z", "--symbol", symbol)
    args.json = True
    assert await cmd_bars(migrated, args) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["start"] == "2025-02-03T00:00:00Z"
    assert report["bars"] == {"1m": 3, "5m": 2, "1h": 1, "1d": 1}
    assert report["replaced"] == report["bars"]
    logged = await timescale_pool.fetchval(
        "SELECT count(*) FROM system_events WHERE event_type = 'aggregate_repaired' AND details->>'symbol' = $1",
        symbol,
    )
    assert logged == 1


@pytest.mark.integration
@pytest.mark.timescale_license
async def test_community_repair_leaves_the_open_buckets_to_real_time_aggregation(
    community: Settings, community_pool: asyncpg.Pool, test_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9: repair refreshed every continuous aggregate up to the next UTC midnight,
    which materialised the buckets still filling and moved the watermark past them:
    a tick arriving after the repair was missing from its bars. Each level now stops
    at its refresh policy's end offset, and the views equal a GROUP BY afterwards."""
    source, symbol = f"cap-{test_id}", f"CAP{test_id.upper()}"
    offsets = OffsetStore(community_pool, f"g-{test_id}")
    sink = TimescaleSink(community_pool, offsets, rollups=False)
    now_ns = "SELECT (extract(epoch FROM now()) * 1e6)::int8 * 1000"

    sink.write([(Tick(symbol, "X", 100 * S, S, await community_pool.fetchval(now_ns) - S, source, 0), 0, 0)])
    await sink.flush()
    args = parse("bars", "repair", "--from", "-10m", "--to", "+1m")
    args.json = True
    assert await cmd_bars(community, args) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["edition"] == "timescale"
    sink.write([(Tick(symbol, "X", 101 * S, S, await community_pool.fetchval(now_ns), source, 1), 0, 1)])
    await sink.flush()

    for resolution in RESOLUTIONS:
        width = {"1m": "1 minute", "5m": "5 minutes", "1h": "1 hour", "1d": "1 day"}[resolution]
        expected = await community_pool.fetch(
            f"SELECT time_bucket(INTERVAL '{width}', time) AS bucket, count(*) AS n, max(price) AS high"
            " FROM stock_prices WHERE symbol = $1 GROUP BY 1 ORDER BY 1",
            symbol,
        )
        shown = await community_pool.fetch(
            f"SELECT bucket, trade_count AS n, high FROM ohlcv_{resolution} WHERE symbol = $1 ORDER BY 1", symbol
        )
        assert [tuple(r) for r in shown] == [tuple(r) for r in expected], resolution


async def test_symbol_is_only_for_repair(capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors, found before anything connects."""
    settings = Settings()
    assert await cmd_bars(settings, parse("bars", "AAPL", "--from", "-1h", "--symbol", "AAPL")) == EXIT_USAGE
    assert "--symbol is for `bars repair`" in capsys.readouterr().err
    assert await cmd_bars(settings, parse("bars", "AAPL", "--from", "-1h", "--to", "-2h")) == EXIT_USAGE
