"""What a portfolio is worth at the latest quotes: pure, shared by the valuation
route and the snapshot worker, so that both compute the same figures.

A holding is valued only at a **fresh** quote: one whose tick is at most
``max_age_ns`` old. A stale quote is reported with its price and age but never
enters a market value; neither does a symbol without any quote. While an open
holding lacks a fresh quote, the portfolio's market value, unrealised P&L and
total value are unknown (None) rather than a sum that silently leaves it out;
cost basis, cash and realised P&L are always known. A holding sold down to zero
needs no quote: its market value is 0.

Market values are quantity times price rounded to 9 places, half to even (as
every amount in ``ledger.py``); unrealised P&L is market value minus cost basis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Literal

from nexanest.services.portfolio.ledger import DECIMAL_CONTEXT, ZERO, Position, round_amount

QuoteStatus = Literal["fresh", "stale", "missing"]


@dataclass(frozen=True, slots=True)
class Quote:
    """The latest quote of a symbol, as the pipeline keeps it in Redis."""

    price: Decimal
    #: The tick's exchange time, Unix nanoseconds.
    ts_ns: int


@dataclass(frozen=True, slots=True)
class HoldingValue:
    symbol: str
    position: Position
    #: None for a holding of nothing (no quote needed).
    status: QuoteStatus | None
    #: The quote's price, fresh or stale (a stale one is in no value).
    price: Decimal | None
    quote_age_s: float | None
    market_value: Decimal | None
    unrealised: Decimal | None


@dataclass(frozen=True, slots=True)
class PortfolioValue:
    cash: Decimal
    holdings: tuple[HoldingValue, ...]
    #: Of the holdings; None while one of them lacks a fresh quote.
    market_value: Decimal | None
    cost_basis: Decimal
    unrealised: Decimal | None
    realised: Decimal
    #: Market value plus cash.
    total_value: Decimal | None
    #: Open holdings without a fresh quote.
    unpriced: tuple[str, ...]

    @property
    def positions(self) -> int:
        """Open holdings (quantity above zero)."""
        return sum(1 for h in self.holdings if h.position.quantity > 0)


def value_portfolio(
    cash: Decimal,
    positions: Mapping[str, Position],
    quotes: Mapping[str, Quote | None],
    *,
    now_ns: int,
    max_age_ns: int,
) -> PortfolioValue:
    """The value of a portfolio with ``cash`` and ``positions`` at ``quotes``
    (a symbol absent from ``quotes`` has none), as of ``now_ns``."""
    with localcontext(DECIMAL_CONTEXT):
        holdings = tuple(
            _value_holding(symbol, positions[symbol], quotes.get(symbol), now_ns, max_age_ns)
            for symbol in sorted(positions)
        )
        unpriced = tuple(h.symbol for h in holdings if h.position.quantity > 0 and h.status != "fresh")
        cost_basis = sum((h.position.cost_basis for h in holdings), ZERO)
        realised = sum((h.position.realised for h in holdings), ZERO)
        market_value = None if unpriced else sum((h.market_value or ZERO for h in holdings), ZERO)
        return PortfolioValue(
            cash=cash,
            holdings=holdings,
            market_value=market_value,
            cost_basis=cost_basis,
            unrealised=None if market_value is None else market_value - cost_basis,
            realised=realised,
            total_value=None if market_value is None else market_value + cash,
            unpriced=unpriced,
        )


def _value_holding(symbol: str, position: Position, quote: Quote | None, now_ns: int, max_age_ns: int) -> HoldingValue:
    if position.quantity == 0:
        return HoldingValue(symbol, position, None, None, None, ZERO, ZERO)
    if quote is None:
        return HoldingValue(symbol, position, "missing", None, None, None, None)
    age_ns = max(0, now_ns - quote.ts_ns)  # a tick stamped a little ahead of this clock is not negative-aged
    age_s = round(age_ns / 1e9, 3)
    if age_ns > max_age_ns:
        return HoldingValue(symbol, position, "stale", quote.price, age_s, None, None)
    market_value = round_amount(position.quantity * quote.price)
    return HoldingValue(symbol, position, "fresh", quote.price, age_s, market_value, market_value - position.cost_basis)
