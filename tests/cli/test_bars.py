"""``nexanest bars show`` and ``nexanest bars repair``: arguments (unit), reading
and repairing through the commands against the real TimescaleDB, on each
edition's own cluster (integration)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import pytest

from nexanest.cli.bars import cmd_bars_repair, cmd_bars_show
from nexanest.cli.main import parse_args
from nexanest.cli.runtime import EXIT_OK, EXIT_USAGE
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
    return parse_args(argv)


def test_bars_arguments() -> None:
    args = parse("bars", "show", "AAPL", "--interval", "5m", "--from", "-2h", "--json")
    assert (args.handler, args.symbol, args.interval, args.json) == (cmd_bars_show, "AAPL", "5m", True)
    assert args.from_ns < args.to_ns
    args = parse("bars", "repair", "--from", "2025-02-03", "--to", "2025-02-04", "--symbol", "AAPL")
    assert (args.handler, args.symbol, args.json) == (cmd_bars_repair, "AAPL", False)
    assert args.from_ns == int(datetime(2025, 2, 3, tzinfo=UTC).timestamp()) * S
    assert parse("bars", "show", "AAPL", "--from", "-1d").interval == "1m"


def test_a_symbol_named_repair_can_be_shown() -> None:
    """Issue 10: `bars SYMBOL|repair` took the symbol REPAIR... for the word."""
    args = parse("bars", "show", "repair", "--from", "-1h")
    assert (args.handler, args.symbol) == (cmd_bars_show, "repair")


def test_every_resolution_is_an_interval() -> None:
    for resolution in RESOLUTIONS:
        assert parse("bars", "show", "AAPL", "--from", "-1h", "--interval", resolution).interval == resolution


@pytest.mark.parametrize(
    "argv",
    [
        ("bars", "show", "AAPL"),  # --from is required
        ("bars", "show", "AAPL", "--from", "-1h", "--interval", "2m"),
        ("bars", "show", "--from", "-1h"),  # no symbol
        ("bars", "show", "AAPL", "--from", "-1h", "--symbol", "AAPL"),  # --symbol is repair's
        ("bars", "repair", "--from", "-1d", "--interval", "1m"),  # repair does every interval
        ("bars", "AAPL", "--from", "-1h"),  # the old form
    ],
)
def test_bad_bars_arguments_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == EXIT_USAGE
    assert "error" in capsys.readouterr().err


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
    args = parse(
        "bars", "show", symbol, "--interval", "5m", "--from", "2025-02-03T14:33:00Z", "--to", "2025-02-03T15:00Z"
    )
    assert await cmd_bars_show(migrated, args, asyncio.Event()) == EXIT_OK
    args.json = True
    assert await cmd_bars_show(migrated, args, asyncio.Event()) == EXIT_OK
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
    assert await cmd_bars_repair(migrated, args, asyncio.Event()) == EXIT_OK
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
    assert await cmd_bars_repair(community, args, asyncio.Event()) == EXIT_OK
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


async def test_an_empty_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Found before anything connects."""
    settings = Settings()
    args = parse("bars", "show", "AAPL", "--from", "2025-02-03T15:00Z", "--to", "2025-02-03T14:00Z")
    assert await cmd_bars_show(settings, args, asyncio.Event()) == EXIT_USAGE
    assert "nexanest bars show: --from is not before --to" in capsys.readouterr().err
    args = parse("bars", "repair", "--from", "2025-02-03T14:00Z", "--to", "2025-02-03T14:00Z")
    assert await cmd_bars_repair(settings, args, asyncio.Event()) == EXIT_USAGE
    assert "nexanest bars repair: --from is not before --to" in capsys.readouterr().err
