"""The bookkeeping of a portfolio: what a transaction does to its cash and holdings.

Pure functions over ``Decimal``; ``repository.py`` applies their answer inside the
database transaction that holds the portfolio's row lock, so that two requests
never book against the same balance.

The rules (the README's Portfolio section says the same):

- **Cash** never goes below zero. A deposit adds to it; a withdrawal, a buy
  (its amount plus fees) or a sell whose fees exceed its proceeds that would
  take it below zero is refused.
- **Average cost.** A holding keeps its quantity and its total cost basis (the
  amounts plus fees of its buys). A buy adds to both. A sell takes out the cost
  of what it sells, ``cost_basis * sold / held`` (the whole basis when the whole
  holding goes, so nothing is left over by rounding), and realises
  ``proceeds - fees - that cost``. Selling more than is held is refused.
- **Rounding.** Amounts (quantity times price, the cost taken out) are rounded
  to 9 decimal places, half to even; everything else is exact.
- **Limits.** Balances must fit the database's NUMERIC(38, 9) (29 integer
  digits), holdings its NUMERIC(20, 9): a transaction that would pass them is
  refused as too large.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext
from typing import Final, Literal

ZERO: Final = Decimal(0)
#: Nine decimal places: the scale of every stored amount.
_QUANTUM: Final = Decimal("1e-9")
#: Exact arithmetic on values of up to 38 digits, with room to spare.
DECIMAL_CONTEXT: Final = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])
#: NUMERIC(38, 9) (money) and NUMERIC(20, 9) (quantities) hold magnitudes below these.
_LIMIT: Final = Decimal(10) ** 29
_QUANTITY_LIMIT: Final = Decimal(10) ** 11

Kind = Literal["buy", "sell", "deposit", "withdraw"]


@dataclass(frozen=True, slots=True)
class Position:
    """A holding of one symbol: ``cost_basis`` is 0 whenever ``quantity`` is."""

    quantity: Decimal = ZERO
    cost_basis: Decimal = ZERO
    #: Everything realised on this symbol so far.
    realised: Decimal = ZERO

    @property
    def average_cost(self) -> Decimal | None:
        """Cost per unit held, rounded to 9 places; None for no holding."""
        if self.quantity == 0:
            return None
        with localcontext(DECIMAL_CONTEXT):
            return round_amount(self.cost_basis / self.quantity)


@dataclass(frozen=True, slots=True)
class Booking:
    """What a transaction changes: the portfolio's new cash balance and, for a
    trade, the holding's new state."""

    cash: Decimal
    #: The gross amount: quantity times price for a trade, the sum moved otherwise.
    amount: Decimal
    #: None for a deposit or a withdrawal.
    position: Position | None = None
    #: Set for a sell only.
    realised_pnl: Decimal | None = None


class Refused(Exception):
    """The transaction cannot be booked against the portfolio as it stands (409).
    ``detail`` is a sentence for the client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TooLarge(Exception):
    """A balance would no longer fit the database (422)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def round_amount(value: Decimal) -> Decimal:
    """``value`` to 9 decimal places, half to even."""
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN, context=DECIMAL_CONTEXT)


def buy(cash: Decimal, held: Position, quantity: Decimal, price: Decimal, fees: Decimal) -> Booking:
    """Buy ``quantity`` at ``price``: pays amount plus fees from cash, adds both to the cost basis."""
    _positive(quantity, price)
    with localcontext(DECIMAL_CONTEXT):
        amount = round_amount(quantity * price)
        cost = amount + fees
        if cost > cash:
            raise Refused(f"the buy costs {_text(cost)} with fees, and the portfolio holds {_text(cash)} in cash")
        position = Position(held.quantity + quantity, held.cost_basis + cost, held.realised)
        return Booking(cash=_fits(cash - cost), amount=amount, position=_fits_position(position))


def sell(cash: Decimal, held: Position, quantity: Decimal, price: Decimal, fees: Decimal) -> Booking:
    """Sell ``quantity`` at ``price`` out of ``held``, at its average cost."""
    _positive(quantity, price)
    if quantity > held.quantity:
        raise Refused(f"the sell is for {_text(quantity)} and the portfolio holds {_text(held.quantity)}")
    with localcontext(DECIMAL_CONTEXT):
        amount = round_amount(quantity * price)
        if quantity == held.quantity:
            cost_out = held.cost_basis
        else:
            cost_out = round_amount(held.cost_basis * quantity / held.quantity)
        proceeds = amount - fees
        if cash + proceeds < 0:
            raise Refused(f"the sell's fees exceed its proceeds by more than the portfolio's cash, {_text(cash)}")
        realised = proceeds - cost_out
        position = Position(held.quantity - quantity, held.cost_basis - cost_out, held.realised + realised)
        return Booking(
            cash=_fits(cash + proceeds), amount=amount, position=_fits_position(position), realised_pnl=_fits(realised)
        )


def deposit(cash: Decimal, amount: Decimal) -> Booking:
    _positive(amount)
    with localcontext(DECIMAL_CONTEXT):
        return Booking(cash=_fits(cash + amount), amount=amount)


def withdraw(cash: Decimal, amount: Decimal) -> Booking:
    _positive(amount)
    if amount > cash:
        raise Refused(f"the withdrawal is for {_text(amount)} and the portfolio holds {_text(cash)} in cash")
    with localcontext(DECIMAL_CONTEXT):
        return Booking(cash=cash - amount, amount=amount)


def _positive(*values: Decimal) -> None:
    """The request models guarantee it; a caller that does not gets an error, not a wrong ledger."""
    if any(not v.is_finite() or v <= 0 for v in values):
        raise ValueError("quantities, prices and amounts must be positive")


def _fits(value: Decimal) -> Decimal:
    if abs(value) >= _LIMIT:
        raise TooLarge("the transaction would take a balance beyond 29 integer digits")
    return value


def _fits_position(position: Position) -> Position:
    if position.quantity >= _QUANTITY_LIMIT:
        raise TooLarge("the holding would pass 11 integer digits")
    _fits(position.cost_basis)
    _fits(position.realised)
    return position


def _text(value: Decimal) -> str:
    return format_decimal(value)


def format_decimal(value: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros: ``12.5``, ``0``, ``-3``."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
