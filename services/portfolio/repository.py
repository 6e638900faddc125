"""The portfolio database, in parameterised SQL through asyncpg.

Every function takes a connection inside ``acting_as`` (``services/rls.py``):
the row-level security of the tables then shows and admits only the acting
user's rows, so a portfolio of another user is indistinguishable from one that
does not exist (None, never an error of its own). Nothing here sets the acting
user or filters by it: the database does.

``book_transaction`` is the one writer of the ledger. It locks the portfolio's
row (``SELECT ... FOR UPDATE``) before it reads a balance, so two transactions
of one portfolio are booked one after the other, each against the other's
result: two concurrent sells of the whole holding book one and refuse the other.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from nexanest.services.portfolio import ledger
from nexanest.services.portfolio.ledger import Booking, Position
from nexanest.services.portfolio.models import CashIn, TradeIn
from nexanest.services.rls import count_under_lock

_PORTFOLIO_COLUMNS = "portfolio_id, user_id, name, currency, cash, created_at"
_TRANSACTION_COLUMNS = (
    "transaction_id, seq, kind, symbol, quantity, price, fees, amount, realised_pnl, executed_at, recorded_at"
)


class NameTaken(Exception):
    """The acting user already has a portfolio of that name (409)."""


class TooMany(Exception):
    """The acting user has as many portfolios as allowed (409)."""


@dataclass(frozen=True, slots=True)
class Holdings:
    """A portfolio's cash and positions, read in one statement."""

    currency: str
    cash: Decimal
    positions: dict[str, Position]
    updated_at: dict[str, datetime]


async def create_portfolio(
    conn: asyncpg.Connection, user_id: uuid.UUID, name: str, currency: str, *, max_per_user: int
) -> asyncpg.Record:
    """Create a portfolio of ``user_id`` (the acting user). Raises ``NameTaken``
    or ``TooMany``. Creations of one user are serialised by a transaction-level
    advisory lock, so the count cannot be raced past."""
    if await count_under_lock(conn, "portfolios", f"portfolio-create:{user_id}") >= max_per_user:
        raise TooMany
    try:
        record: asyncpg.Record = await conn.fetchrow(
            f"INSERT INTO portfolios (portfolio_id, user_id, name, currency) VALUES ($1, $2, $3, $4) "
            f"RETURNING {_PORTFOLIO_COLUMNS}",
            uuid.uuid4(),
            user_id,
            name,
            currency,
        )
    except asyncpg.UniqueViolationError as exc:
        raise NameTaken from exc
    return record


async def list_portfolios(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The acting user's portfolios, oldest first (at most ``max_per_user``)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios ORDER BY created_at, portfolio_id"
    )
    return rows


async def get_portfolio(conn: asyncpg.Connection, portfolio_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_PORTFOLIO_COLUMNS} FROM portfolios WHERE portfolio_id = $1", portfolio_id
    )
    return row


async def delete_portfolio(conn: asyncpg.Connection, portfolio_id: uuid.UUID) -> bool:
    """Delete a portfolio with its holdings and transactions; False when the
    acting user has no such portfolio."""
    deleted = await conn.fetchval("DELETE FROM portfolios WHERE portfolio_id = $1 RETURNING true", portfolio_id)
    return bool(deleted)


async def book_transaction(
    conn: asyncpg.Connection,
    portfolio_id: uuid.UUID,
    transaction: TradeIn | CashIn,
    executed_at: datetime,
) -> asyncpg.Record | None:
    """Book ``transaction`` and return its row; None when the acting user has no
    such portfolio. Raises ``ledger.Refused`` (beyond the holding or the cash)
    or ``ledger.TooLarge``; the caller's transaction then rolls back. Must run
    in a transaction (``acting_as`` opens one): the locks last until it ends."""
    portfolio = await conn.fetchrow(
        "SELECT user_id, cash, last_seq FROM portfolios WHERE portfolio_id = $1 FOR UPDATE", portfolio_id
    )
    if portfolio is None:
        return None
    cash: Decimal = portfolio["cash"]
    symbol: str | None = None
    quantity = price = None
    fees = Decimal(0)
    if isinstance(transaction, TradeIn):
        symbol, quantity, price, fees = transaction.symbol, transaction.quantity, transaction.price, transaction.fees
        held = await _held(conn, portfolio_id, symbol)
        book = ledger.buy if transaction.kind == "buy" else ledger.sell
        booking = book(cash, held or Position(), quantity, price, fees)
        await _write_position(conn, portfolio_id, portfolio["user_id"], symbol, booking, existed=held is not None)
    elif transaction.kind == "deposit":
        booking = ledger.deposit(cash, transaction.amount)
    else:
        booking = ledger.withdraw(cash, transaction.amount)
    seq = portfolio["last_seq"] + 1
    await conn.execute(
        "UPDATE portfolios SET cash = $2, last_seq = $3 WHERE portfolio_id = $1", portfolio_id, booking.cash, seq
    )
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO transactions (transaction_id, portfolio_id, user_id, seq, kind, symbol, quantity, price, fees, "
        "amount, realised_pnl, executed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        f"RETURNING {_TRANSACTION_COLUMNS}",
        uuid.uuid4(),
        portfolio_id,
        portfolio["user_id"],
        seq,
        transaction.kind,
        symbol,
        quantity,
        price,
        fees,
        booking.amount,
        booking.realised_pnl,
        executed_at,
    )
    return row


async def _held(conn: asyncpg.Connection, portfolio_id: uuid.UUID, symbol: str) -> Position | None:
    # The portfolio's lock already serialises its writers; locking the row as well
    # keeps this correct for any writer that might lock only the holding.
    row = await conn.fetchrow(
        "SELECT quantity, cost_basis, realised FROM holdings WHERE portfolio_id = $1 AND symbol = $2 FOR UPDATE",
        portfolio_id,
        symbol,
    )
    return None if row is None else Position(row["quantity"], row["cost_basis"], row["realised"])


async def _write_position(
    conn: asyncpg.Connection,
    portfolio_id: uuid.UUID,
    user_id: uuid.UUID,
    symbol: str,
    booking: Booking,
    *,
    existed: bool,
) -> None:
    position = booking.position
    assert position is not None  # noqa: S101 - a trade's booking always has one
    if existed:
        await conn.execute(
            "UPDATE holdings SET quantity = $3, cost_basis = $4, realised = $5, updated_at = now() "
            "WHERE portfolio_id = $1 AND symbol = $2",
            portfolio_id,
            symbol,
            position.quantity,
            position.cost_basis,
            position.realised,
        )
    else:
        await conn.execute(
            "INSERT INTO holdings (portfolio_id, user_id, symbol, quantity, cost_basis, realised) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            portfolio_id,
            user_id,
            symbol,
            position.quantity,
            position.cost_basis,
            position.realised,
        )


async def holdings(conn: asyncpg.Connection, portfolio_id: uuid.UUID) -> Holdings | None:
    """The portfolio's currency, cash and every holding (closed ones too, with
    their realised P&L), in one statement; None when there is no such portfolio."""
    rows = await conn.fetch(
        "SELECT p.currency, p.cash, h.symbol, h.quantity, h.cost_basis, h.realised, h.updated_at "
        "FROM portfolios p LEFT JOIN holdings h ON h.portfolio_id = p.portfolio_id "
        "WHERE p.portfolio_id = $1 ORDER BY h.symbol",
        portfolio_id,
    )
    if not rows:
        return None
    positions = {
        r["symbol"]: Position(r["quantity"], r["cost_basis"], r["realised"]) for r in rows if r["symbol"] is not None
    }
    updated = {r["symbol"]: r["updated_at"] for r in rows if r["symbol"] is not None}
    return Holdings(rows[0]["currency"], rows[0]["cash"], positions, updated)


async def transactions_page(
    conn: asyncpg.Connection, portfolio_id: uuid.UUID, *, before_seq: int | None, limit: int
) -> Sequence[asyncpg.Record] | None:
    """Up to ``limit`` transactions, newest first, older than ``before_seq`` when
    given; None when there is no such portfolio."""
    if await conn.fetchval("SELECT true FROM portfolios WHERE portfolio_id = $1", portfolio_id) is None:
        return None
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_TRANSACTION_COLUMNS} FROM transactions "
        "WHERE portfolio_id = $1 AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
        portfolio_id,
        before_seq,
        limit,
    )
    return rows
