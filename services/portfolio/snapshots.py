"""The snapshot worker: the value of every portfolio, written to TimescaleDB on a schedule.

Each round reads every portfolio of every user through the portfolio database's
``portfolio_snapshot_inputs()`` (portfolio/0002: a SECURITY DEFINER function, the
only way across users for a role that bypasses no row-level security), reads the
quotes of all their symbols in one Redis round trip, values each portfolio as
the valuation route does (``valuation.py``: a stale quote is never used), and
writes all the rows in one statement (``record_portfolio_snapshots``).

Rounds fall on multiples of the interval (every minute on the minute), and a
snapshot is stored once per (portfolio, time): a second worker, or the
service's own next to ``nexanest serve portfolio-snapshots``, writes nothing
twice. A round that fails (a database or Redis away) is logged and the next
one runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import redis.asyncio as redis

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource
from nexanest.services.portfolio.ledger import Position
from nexanest.services.portfolio.quotes import read_quotes
from nexanest.services.portfolio.snapshot_store import SnapshotRow, record_snapshots
from nexanest.services.portfolio.valuation import value_portfolio
from nexanest.services.resources import postgres_pool, redis_client

_log = get_logger("nexanest.services.portfolio.snapshots")


@dataclass(frozen=True, slots=True)
class RoundResult:
    at: datetime
    portfolios: int
    #: New rows (a portfolio already snapshotted at ``at`` is not written again).
    written: int
    #: Portfolios whose market value is unknown (an open holding without a fresh quote).
    unpriced: int


async def snapshot_round(
    portfolio_db: asyncpg.Pool,
    snapshots_db: asyncpg.Pool,
    quotes: redis.Redis,
    *,
    quote_key_prefix: str,
    quote_max_age_s: float,
    at: datetime,
) -> RoundResult:
    """Snapshot every portfolio as of now, stored under the time ``at``."""
    rows = await portfolio_db.fetch(
        "SELECT portfolio_id, user_id, cash, symbol, quantity, cost_basis, realised FROM portfolio_snapshot_inputs()"
    )
    portfolios: dict[uuid.UUID, tuple[uuid.UUID, Decimal, dict[str, Position]]] = {}
    for r in rows:
        _, _, positions = portfolios.setdefault(r["portfolio_id"], (r["user_id"], r["cash"], {}))
        if r["symbol"] is not None:
            positions[r["symbol"]] = Position(r["quantity"], r["cost_basis"], r["realised"])
    symbols = sorted({s for _, _, held in portfolios.values() for s, p in held.items() if p.quantity > 0})
    latest = await read_quotes(quotes, quote_key_prefix, symbols)
    now_ns = time.time_ns()
    snapshots = []
    for portfolio_id, (user_id, cash, positions) in portfolios.items():
        value = value_portfolio(cash, positions, latest, now_ns=now_ns, max_age_ns=int(quote_max_age_s * 1e9))
        snapshots.append(
            SnapshotRow(
                portfolio_id=portfolio_id,
                user_id=user_id,
                market_value=value.market_value,
                cost_basis=value.cost_basis,
                cash=value.cash,
                realised=value.realised,
                positions=value.positions,
                unpriced=len(value.unpriced),
            )
        )
    written = await record_snapshots(snapshots_db, at, snapshots)
    return RoundResult(at, len(snapshots), written, sum(1 for s in snapshots if s.unpriced))


def next_slot(now_s: float, interval_s: float) -> float:
    """The first multiple of ``interval_s`` (Unix seconds) after ``now_s``."""
    return (math.floor(now_s / interval_s) + 1) * interval_s


async def run_snapshots(settings: Settings, *, stop: asyncio.Event, interval_s: float | None = None) -> None:
    """Snapshot every portfolio at each multiple of ``interval_s`` (default
    ``settings.services.portfolio_snapshot_interval_s``) until ``stop`` is set.

    Connects as the portfolio service's role (``settings.services.portfolio_dsn``
    and ``.portfolio_snapshots_dsn``) and to the quotes' Redis database; raises
    when one of them cannot be reached at start, and logs (and outlives) the
    failure of a round afterwards. Returns soon after ``stop`` is set, leaving a
    round in progress to finish first."""
    interval = interval_s or settings.services.portfolio_snapshot_interval_s
    if interval <= 0:
        raise ValueError(f"interval_s must be positive, not {interval}")
    s = settings.services
    async with (
        postgres_pool("portfolio-db", s.portfolio_dsn, max_size=2).open() as portfolio_db,
        postgres_pool("snapshots-db", s.portfolio_snapshots_dsn, max_size=2).open() as snapshots_db,
        redis_client("quotes", settings.redis.url, db=settings.redis.db_quotes).open() as quotes,
    ):
        _log.info("snapshots_started", interval_s=interval)
        while not stop.is_set():
            slot = next_slot(time.time(), interval)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, slot - time.time()))
                break
            except TimeoutError:
                pass
            started = time.perf_counter()
            try:
                result = await snapshot_round(
                    portfolio_db,
                    snapshots_db,
                    quotes,
                    quote_key_prefix=settings.redis.quote_key_prefix,
                    quote_max_age_s=s.portfolio_quote_max_age_s,
                    at=datetime.fromtimestamp(slot, UTC),
                )
            except Exception as exc:  # noqa: BLE001 - a failed round must not end the worker; the next may succeed
                _log.error("snapshot_round_failed", at=slot, error=repr(exc))
                continue
            _log.info(
                "snapshot_round",
                at=result.at.isoformat(),
                portfolios=result.portfolios,
                written=result.written,
                unpriced=result.unpriced,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
    _log.info("snapshots_stopped")


def snapshot_worker(settings: Settings, *, name: str = "snapshots") -> Resource[asyncio.Task[None]]:
    """The worker as a resource of the service (``portfolio_snapshots_in_service``):
    started with the service, stopped with it; ``/readyz`` fails if it died."""

    @asynccontextmanager
    async def running() -> AsyncIterator[asyncio.Task[None]]:
        stop = asyncio.Event()
        task = asyncio.create_task(run_snapshots(settings, stop=stop), name="portfolio-snapshots")
        task.add_done_callback(_report_failure)
        try:
            yield task
        finally:
            stop.set()
            # A failure was logged when it happened, and /readyz reports it; the service stops regardless.
            with contextlib.suppress(Exception):
                await task

    async def alive(task: asyncio.Task[None]) -> None:
        if task.done():
            raise RuntimeError("the snapshot worker stopped")

    return Resource(name, running, alive)


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("snapshots_failed", error=repr(task.exception()))
