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
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
import redis.asyncio as redis

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource
from nexanest.services.background import run_rounds, worker_resource
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

        async def one_round(at: datetime) -> dict[str, object]:
            result = await snapshot_round(
                portfolio_db,
                snapshots_db,
                quotes,
                quote_key_prefix=settings.redis.quote_key_prefix,
                quote_max_age_s=s.portfolio_quote_max_age_s,
                at=at,
            )
            return {
                "at": result.at.isoformat(),
                "portfolios": result.portfolios,
                "written": result.written,
                "unpriced": result.unpriced,
            }

        await run_rounds(interval, stop, one_round, log=_log, event="snapshot_round")
    _log.info("snapshots_stopped")


def snapshot_worker(settings: Settings, *, name: str = "snapshots") -> Resource[asyncio.Task[None]]:
    """The worker as a resource of the service (``portfolio_snapshots_in_service``):
    started with the service, stopped with it; ``/readyz`` fails if it died."""
    return worker_resource(
        name,
        lambda stop: run_snapshots(settings, stop=stop),
        task_name="portfolio-snapshots",
        log=_log,
        failed_event="snapshots_failed",
    )
