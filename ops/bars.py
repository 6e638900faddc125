"""``nexanest bars``: print OHLCV bars from the query surface, or repair them.

Reading goes through the views ``ohlcv_1m`` .. ``ohlcv_1d`` as the ingest role,
so it is the same on both TimescaleDB editions. Repair runs as the owner role
(``timescale.admin_dsn``): it deletes and rewrites bars, which the ingest role
may not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import asyncpg

from nexanest.ops.bars_repair import RepairReport, repair
from nexanest.pipeline.db import ns_to_datetime
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.events import EventEmitter
from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS, VIEWS, WIDTHS, Resolution
from nexanest.schemas.events import DetailValue, EventType, Severity

COMPONENT: Final = "cli.bars"


@dataclass(frozen=True, slots=True)
class BarRow:
    """One row of the query surface."""

    bucket: datetime
    symbol: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int
    vwap: Decimal | None  # None when every tick of the bucket had size 0

    def to_json(self) -> dict[str, Any]:
        """Decimals as exact strings, the bucket as ISO-8601 UTC."""
        return {
            "bucket": _iso(self.bucket),
            "symbol": self.symbol,
            "open": _num(self.open),
            "high": _num(self.high),
            "low": _num(self.low),
            "close": _num(self.close),
            "volume": _num(self.volume),
            "trade_count": self.trade_count,
            "vwap": None if self.vwap is None else _num(self.vwap),
        }


_SURFACE: Final = "bucket, symbol, open, high, low, close, volume, trade_count, vwap"


async def _connect(dsn: str, role: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(
            f"cannot connect to TimescaleDB as the {role} role ({type(exc).__name__}: {exc}); "
            "is it running (make db-status)?"
        ) from exc


async def fetch_bars(conn: Any, symbol: str, resolution: Resolution, start: datetime, end: datetime) -> list[BarRow]:
    """The bars of ``symbol`` whose bucket overlaps ``[start, end)``, oldest first."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown interval {resolution!r}; one of {', '.join(RESOLUTIONS)}")
    rows = await conn.fetch(
        f"SELECT {_SURFACE} FROM {VIEWS[resolution]}"
        " WHERE symbol = $1 AND bucket > $2::timestamptz - $3::interval AND bucket < $4 ORDER BY bucket",
        symbol,
        start,
        WIDTHS[resolution],
        end,
    )
    return [BarRow(*r) for r in rows]


async def read_bars(settings: Settings, symbol: str, resolution: Resolution, from_ns: int, to_ns: int) -> list[BarRow]:
    conn = await _connect(settings.timescale.dsn.get_secret_value(), "ingest")
    try:
        return await fetch_bars(conn, symbol, resolution, ns_to_datetime(from_ns), ns_to_datetime(to_ns))
    finally:
        await conn.close()


async def repair_bars(settings: Settings, from_ns: int, to_ns: int, symbol: str | None) -> RepairReport:
    """Recompute the bars of the range from the raw ticks (see ``ops.bars_repair.repair``)
    and record it as an ``aggregate_repaired`` system event."""
    conn = await _connect(settings.timescale.admin_dsn.get_secret_value(), "owner")
    try:
        report = await repair(conn, ns_to_datetime(from_ns), ns_to_datetime(to_ns), symbol)
        events = EventEmitter(COMPONENT, pool=conn, producer=None, topic=settings.kafka.events_topic)
        await events.emit(EventType.AGGREGATE_REPAIRED, format_repair(report), Severity.INFO, **repair_details(report))
    finally:
        await conn.close()
    return report


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _num(d: Decimal) -> str:
    """Exact, without the trailing zeros of NUMERIC(20, 9): 187.25, not 187.250000000."""
    text = f"{d:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_bars(rows: list[BarRow], resolution: Resolution) -> str:
    header = ("bucket (UTC)", "open", "high", "low", "close", "volume", "trades", "vwap")
    width = WIDTHS[resolution]
    time_format = "%Y-%m-%d" if width >= timedelta(days=1) else "%Y-%m-%d %H:%M"
    table = [header] + [
        (
            r.bucket.strftime(time_format),
            _num(r.open),
            _num(r.high),
            _num(r.low),
            _num(r.close),
            _num(r.volume),
            str(r.trade_count),
            "" if r.vwap is None else _num(r.vwap),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    )


def repair_json(report: RepairReport) -> dict[str, Any]:
    return {
        "start": _iso(report.start),
        "end": _iso(report.end),
        "symbol": report.symbol,
        "edition": report.edition,
        "bars": dict(report.bars),
        "replaced": dict(report.replaced),
    }


def repair_details(report: RepairReport) -> dict[str, DetailValue]:
    """``repair_json`` flattened for the event's details (scalars only, see
    ``schemas/events.py``): ``bars_1m`` .. ``bars_1d``, ``replaced_1m`` .. ``replaced_1d``;
    the community edition refreshes instead and reports no counts."""
    counts = {f"{kind}_{r}": n for kind in ("bars", "replaced") for r, n in getattr(report, kind).items()}
    return {
        "start": _iso(report.start),
        "end": _iso(report.end),
        "symbol": report.symbol,
        "edition": report.edition,
        **counts,
    }


def format_repair(report: RepairReport) -> str:
    scope = "all symbols" if report.symbol is None else report.symbol
    head = f"repaired bars of {scope} in [{_iso(report.start)}, {_iso(report.end)})"
    if report.edition == "timescale":
        note = " (all symbols: a refresh cannot be narrowed)" if report.symbol is not None else ""
        capped = [r for r in RESOLUTIONS if r in report.refreshed_to and report.refreshed_to[r] < report.end]
        if capped:
            note += f"; {', '.join(capped)} only up to their refresh policies' end (newer buckets are still open)"
        return f"{head}: continuous aggregates refreshed, 1m to 1d{note}"
    counts = ", ".join(f"{r} {report.bars[r]:,} (had {report.replaced[r]:,})" for r in RESOLUTIONS)
    return f"{head}: bars written {counts}"
