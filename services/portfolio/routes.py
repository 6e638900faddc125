"""The portfolio service's routes.

Every route acts for the user its bearer token names, and touches the
databases only through ``acting_as`` (``services/rls.py``), so row-level
security decides what it sees: a portfolio of another user answers 404 exactly
as one that does not exist, because to the route it does not.

No ``from __future__ import annotations`` here: the routes close over their
resources (``services/app.py``, ``Resource``).
"""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import asyncpg
import redis.asyncio as redis
from fastapi import APIRouter, Depends, Query, Response, status
from redis.exceptions import RedisError

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource
from nexanest.services.portfolio import repository, snapshot_store
from nexanest.services.portfolio.ledger import Refused, TooLarge
from nexanest.services.portfolio.models import (
    HistoryOut,
    HistoryPoint,
    HoldingOut,
    Interval,
    PortfolioIn,
    PortfolioOut,
    TransactionIn,
    TransactionOut,
    TransactionPage,
    ValuationOut,
)
from nexanest.services.portfolio.quotes import read_quotes
from nexanest.services.portfolio.valuation import value_portfolio
from nexanest.services.portfolio.valuation_cache import ValuationCache
from nexanest.services.problems import Problem, problem_responses
from nexanest.services.rls import acting_as
from nexanest.services.tokens import AUTH_RESPONSES, BearerAuth, Identity, TokenVerifier

_log = get_logger("nexanest.services.portfolio")

INTERVALS: Final[dict[str, timedelta]] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
}
#: A history answers at most this many buckets: a wider range needs a coarser interval.
MAX_HISTORY_POINTS: Final = 2000
#: A transaction may be dated this far ahead of the service's clock (clients' clocks drift).
_FUTURE_SKEW: Final = timedelta(minutes=1)
#: Times are accepted between these (the database and every client can hold them).
_EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
_NOT_FOUND: Final = "no such portfolio"


def build_router(
    settings: Settings,
    *,
    verifier: TokenVerifier,
    db: Resource[asyncpg.Pool],
    snapshots_db: Resource[asyncpg.Pool],
    quotes: Resource[redis.Redis],
    cache: Resource[redis.Redis],
) -> APIRouter:
    """The routes under ``/portfolios``, over the given resources."""
    s = settings.services
    current_user = BearerAuth(verifier)
    User = Annotated[Identity, Depends(current_user)]
    Db = Annotated[asyncpg.Pool, Depends(db.get)]
    SnapshotsDb = Annotated[asyncpg.Pool, Depends(snapshots_db.get)]
    Quotes = Annotated[redis.Redis, Depends(quotes.get)]
    Cache = Annotated[redis.Redis, Depends(cache.get)]
    PortfolioId = Annotated[uuid.UUID, "the portfolio's id"]
    router = APIRouter(
        prefix="/portfolios", tags=["portfolios"], responses={**AUTH_RESPONSES, **problem_responses(404, 422)}
    )

    def valuation_cache(client: redis.Redis) -> ValuationCache:
        return ValuationCache(client, s.portfolio_valuation_cache_s)

    async def invalidate(client: redis.Redis, portfolio_id: uuid.UUID) -> None:
        """After a commit: a failure leaves a cached valuation to expire (within the
        cache's few seconds) rather than failing a request whose change is stored."""
        try:
            await valuation_cache(client).invalidate(portfolio_id)
        except (RedisError, OSError) as exc:
            _log.warning("valuation_cache_not_invalidated", portfolio_id=str(portfolio_id), error=repr(exc))

    @router.post(
        "",
        status_code=status.HTTP_201_CREATED,
        responses=problem_responses(409),
        summary="Create a portfolio",
    )
    async def create_portfolio(body: PortfolioIn, user: User, pool: Db, response: Response) -> PortfolioOut:
        """A new, empty portfolio (no cash, no holdings). 409 when the name is taken
        by another of your portfolios, or when you have as many as allowed."""
        try:
            async with acting_as(pool, user.user_id) as conn:
                row = await repository.create_portfolio(
                    conn, user.user_id, body.name, body.currency, max_per_user=s.portfolio_max_per_user
                )
        except repository.NameTaken:
            raise Problem(409, "you already have a portfolio of that name") from None
        except repository.TooMany:
            raise Problem(409, f"you have {s.portfolio_max_per_user} portfolios, the most allowed") from None
        response.headers["Location"] = f"/portfolios/{row['portfolio_id']}"
        return _portfolio(row)

    @router.get("", summary="Your portfolios")
    async def list_portfolios(user: User, pool: Db) -> list[PortfolioOut]:
        """Oldest first."""
        async with acting_as(pool, user.user_id) as conn:
            rows = await repository.list_portfolios(conn)
        return [_portfolio(r) for r in rows]

    @router.get("/{portfolio_id}", summary="One portfolio")
    async def get_portfolio(portfolio_id: PortfolioId, user: User, pool: Db) -> PortfolioOut:
        async with acting_as(pool, user.user_id) as conn:
            row = await repository.get_portfolio(conn, portfolio_id)
        if row is None:
            raise Problem(404, _NOT_FOUND)
        return _portfolio(row)

    @router.delete("/{portfolio_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a portfolio")
    async def delete_portfolio(
        portfolio_id: PortfolioId, user: User, pool: Db, snapshots: SnapshotsDb, cache_client: Cache
    ) -> Response:
        """With its holdings, transactions and history."""
        async with acting_as(pool, user.user_id) as conn:
            deleted = await repository.delete_portfolio(conn, portfolio_id)
        if not deleted:
            raise Problem(404, _NOT_FOUND)
        try:
            async with acting_as(snapshots, user.user_id) as conn:
                await snapshot_store.delete_snapshots(conn, portfolio_id)
        except (OSError, asyncpg.PostgresError) as exc:
            # The portfolio is gone, and with it every way to its history (404):
            # the rows are orphans to sweep, not data anyone can reach.
            _log.warning("snapshots_not_deleted", portfolio_id=str(portfolio_id), error=repr(exc))
        await invalidate(cache_client, portfolio_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/{portfolio_id}/transactions",
        status_code=status.HTTP_201_CREATED,
        responses=problem_responses(409),
        summary="Record a buy, sell, deposit or withdrawal",
    )
    async def add_transaction(
        portfolio_id: PortfolioId, body: TransactionIn, user: User, pool: Db, cache_client: Cache
    ) -> TransactionOut:
        """Books the transaction against the portfolio's cash and holdings (average
        cost). 409 when it would sell more than is held, or take cash below zero
        (a withdrawal, or a buy, beyond the cash)."""
        executed_at = _executed_at(body.executed_at)
        try:
            async with acting_as(pool, user.user_id) as conn:
                row = await repository.book_transaction(conn, portfolio_id, body, executed_at)
        except Refused as exc:
            raise Problem(409, exc.detail) from None
        except TooLarge as exc:
            raise Problem(422, exc.detail) from None
        if row is None:
            raise Problem(404, _NOT_FOUND)
        await invalidate(cache_client, portfolio_id)
        return _transaction(row)

    @router.get("/{portfolio_id}/transactions", summary="The portfolio's transactions, newest first")
    async def list_transactions(
        portfolio_id: PortfolioId,
        user: User,
        pool: Db,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{0,17}$", description="next_cursor of a page")] = None,
    ) -> TransactionPage:
        async with acting_as(pool, user.user_id) as conn:
            rows = await repository.transactions_page(
                conn, portfolio_id, before_seq=None if cursor is None else int(cursor), limit=limit
            )
        if rows is None:
            raise Problem(404, _NOT_FOUND)
        more = len(rows) == limit and rows[-1]["seq"] > 1
        return TransactionPage(
            items=[_transaction(r) for r in rows], next_cursor=str(rows[-1]["seq"]) if more else None
        )

    @router.get("/{portfolio_id}/holdings", summary="The portfolio's holdings")
    async def list_holdings(portfolio_id: PortfolioId, user: User, pool: Db) -> list[HoldingOut]:
        """Every symbol ever held, by symbol; one sold down to zero keeps its realised P&L."""
        async with acting_as(pool, user.user_id) as conn:
            held = await repository.holdings(conn, portfolio_id)
        if held is None:
            raise Problem(404, _NOT_FOUND)
        return [HoldingOut.of(symbol, p, held.updated_at[symbol]) for symbol, p in held.positions.items()]

    @router.get(
        "/{portfolio_id}/valuation",
        response_model=ValuationOut,
        responses=problem_responses(503),
        summary="What the portfolio is worth at the latest quotes",
    )
    async def valuation(
        portfolio_id: PortfolioId, user: User, pool: Db, quotes_client: Quotes, cache_client: Cache
    ) -> Response:
        """Market value, cost basis, unrealised and realised P&L per holding and in
        total. A quote older than ``quote_max_age_s`` is reported as stale, with
        its age, and not used: totals that would need it are then null. Cached
        for a few seconds (``as_of`` says when it was computed); a new transaction
        shows at once."""
        cached = valuation_cache(cache_client)
        try:
            generation, body = await cached.lookup(user.user_id, portfolio_id)
        except (RedisError, OSError) as exc:
            _log.warning("valuation_cache_unavailable", error=repr(exc))
            generation, body = None, None
        if body is not None:
            return Response(body, media_type="application/json")
        async with acting_as(pool, user.user_id) as conn:
            held = await repository.holdings(conn, portfolio_id)
        if held is None:
            raise Problem(404, _NOT_FOUND)
        open_symbols = [symbol for symbol, p in held.positions.items() if p.quantity > 0]
        try:
            latest = await read_quotes(quotes_client, settings.redis.quote_key_prefix, open_symbols)
        except (RedisError, OSError) as exc:
            _log.warning("quotes_unavailable", error=repr(exc))
            raise Problem(503, "the quotes cannot be read at the moment; try again shortly") from None
        now_ns = time.time_ns()
        value = value_portfolio(
            held.cash, held.positions, latest, now_ns=now_ns, max_age_ns=int(s.portfolio_quote_max_age_s * 1e9)
        )
        as_of = datetime.fromtimestamp(now_ns / 1e9, UTC)
        out = ValuationOut.of(portfolio_id, held.currency, as_of, s.portfolio_quote_max_age_s, value)
        body = out.model_dump_json().encode()
        if generation is not None:
            try:
                await cached.store(user.user_id, portfolio_id, generation, body)
            except (RedisError, OSError) as exc:
                _log.warning("valuation_cache_unavailable", error=repr(exc))
        return Response(body, media_type="application/json")

    @router.get("/{portfolio_id}/history", summary="The portfolio's value over time, from its snapshots")
    async def history(
        portfolio_id: PortfolioId,
        user: User,
        pool: Db,
        snapshots: SnapshotsDb,
        from_: Annotated[
            datetime | None, Query(alias="from", description="inclusive; default: `to` minus one day")
        ] = None,
        to: Annotated[datetime | None, Query(description="exclusive; default: now")] = None,
        interval: Annotated[Interval, Query(description="bucket width")] = "5m",
    ) -> HistoryOut:
        """One point per bucket that has snapshots: the last snapshot in it. At most
        2,000 buckets per request; times need a UTC offset."""
        end = _bounded(to, "to") if to is not None else datetime.now(UTC)
        start = _bounded(from_, "from") if from_ is not None else end - timedelta(days=1)
        bucket = INTERVALS[interval]
        if start >= end:
            raise Problem(422, "`from` must be before `to`")
        if (end - start) / bucket > MAX_HISTORY_POINTS:
            raise Problem(
                422, f"the range holds more than {MAX_HISTORY_POINTS} buckets of {interval}: a coarser interval"
            )
        async with acting_as(pool, user.user_id) as conn:
            found = await repository.get_portfolio(conn, portfolio_id)
        if found is None:
            raise Problem(404, _NOT_FOUND)
        async with acting_as(snapshots, user.user_id) as conn:
            rows = await snapshot_store.history(conn, portfolio_id, start, end, bucket)
        return HistoryOut(
            portfolio_id=portfolio_id,
            interval=interval,
            from_=start,
            to=end,
            points=[
                HistoryPoint(
                    time=r["bucket"],
                    market_value=r["market_value"],
                    cost_basis=r["cost_basis"],
                    cash=r["cash"],
                    unrealised=r["unrealised"],
                    realised=r["realised"],
                    total_value=r["total_value"],
                    unpriced=r["unpriced"],
                )
                for r in rows
            ],
        )

    return router


def _bounded(value: datetime, name: str) -> datetime:
    """``value`` in UTC, or 422 when it has no UTC offset or lies outside 1970-2200."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise Problem(422, f"`{name}` needs a UTC offset, e.g. 2026-01-31T12:00:00Z")
    outside = Problem(422, f"`{name}` must lie between 1970 and 2200")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # a year-1 or year-9999 time whose offset takes it out of datetime's range
        raise outside from None
    if not _EARLIEST <= utc < _LATEST:
        raise outside
    return utc


def _executed_at(value: datetime | None) -> datetime:
    now = datetime.now(UTC)
    if value is None:
        return now
    executed_at = _bounded(value, "executed_at")
    if executed_at > now + _FUTURE_SKEW:
        raise Problem(422, "`executed_at` lies in the future")
    return executed_at


def _portfolio(row: asyncpg.Record) -> PortfolioOut:
    return PortfolioOut(
        id=row["portfolio_id"],
        name=row["name"],
        currency=row["currency"],
        cash=row["cash"],
        created_at=row["created_at"],
    )


def _transaction(row: asyncpg.Record) -> TransactionOut:
    return TransactionOut(
        id=row["transaction_id"],
        seq=row["seq"],
        kind=row["kind"],
        symbol=row["symbol"],
        quantity=row["quantity"],
        price=row["price"],
        fees=row["fees"],
        amount=row["amount"],
        realised_pnl=row["realised_pnl"],
        executed_at=row["executed_at"],
        recorded_at=row["recorded_at"],
    )
