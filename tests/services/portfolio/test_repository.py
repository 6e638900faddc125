"""The ledger's writer under concurrency (integration): the portfolio's row lock
makes a second booking wait for the first and book against its result."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from nexanest.services.portfolio import repository
from nexanest.services.portfolio.ledger import Refused
from nexanest.services.portfolio.models import CashIn, TradeIn
from nexanest.services.rls import acting_as
from tests.services.portfolio.conftest import Service

pytestmark = pytest.mark.integration

SELL_ALL = TradeIn(kind="sell", symbol="AAA", quantity=Decimal(5), price=Decimal(11))


async def blocked_by(pool: asyncpg.Pool, backend: int, *, timeout_s: float = 10.0) -> None:
    """Returns once some backend waits for a lock ``backend`` holds; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", backend
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"nothing waited for backend {backend} within {timeout_s} s")


async def book(pool: asyncpg.Pool, user: uuid.UUID, pid: uuid.UUID, transaction: TradeIn | CashIn) -> None:
    async with acting_as(pool, user) as conn:
        await repository.book_transaction(conn, pid, transaction, datetime.now(UTC))


async def test_a_second_sell_waits_for_the_first_and_is_refused_by_its_result(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice = users[0]
    pid = uuid.UUID(await service.create(alice))
    await service.book(alice, str(pid), kind="deposit", amount="100")
    await service.book(alice, str(pid), kind="buy", symbol="AAA", quantity="5", price="10")
    async with acting_as(service.pool, alice) as first:
        await repository.book_transaction(first, pid, SELL_ALL, datetime.now(UTC))
        second = asyncio.create_task(book(service.pool, alice, pid, SELL_ALL))
        await blocked_by(service.pool, await first.fetchval("SELECT pg_backend_pid()"))
        assert not second.done()
    with pytest.raises(Refused, match="holds 0"):
        await second


async def test_a_withdrawal_waits_for_a_buy_and_is_refused_by_its_result(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice = users[0]
    pid = uuid.UUID(await service.create(alice))
    await service.book(alice, str(pid), kind="deposit", amount="100")
    async with acting_as(service.pool, alice) as first:
        buy = TradeIn(kind="buy", symbol="BBB", quantity=Decimal(1), price=Decimal(60))
        await repository.book_transaction(first, pid, buy, datetime.now(UTC))
        second = asyncio.create_task(book(service.pool, alice, pid, CashIn(kind="withdraw", amount=Decimal(50))))
        await blocked_by(service.pool, await first.fetchval("SELECT pg_backend_pid()"))
    with pytest.raises(Refused, match="holds 40 in cash"):
        await second
