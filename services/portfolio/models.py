"""The portfolio service's request and response bodies.

Every quantity, price and amount travels as a JSON **string** holding a plain
decimal number (``"12.5"``), in both directions: a JSON number would pass
through binary floating point in most clients. A number where a string is
expected is refused (422), so a float never reaches the ledger.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from nexanest.services.portfolio.ledger import Position, format_decimal
from nexanest.services.portfolio.valuation import HoldingValue, PortfolioValue, QuoteStatus

#: The pipeline's default symbol rule (``ValidationSettings.symbol_pattern``).
SYMBOL_PATTERN: Final = r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$"
#: Up to 11 integer digits and 9 decimals: the database's NUMERIC(20, 9).
_QUANTITY_PATTERN: Final = r"^[0-9]{1,11}(\.[0-9]{1,9})?$"
#: Up to 15 integer digits and 9 decimals: a deposit or a withdrawal.
_AMOUNT_PATTERN: Final = r"^[0-9]{1,15}(\.[0-9]{1,9})?$"
#: What this service writes: a sign, digits, perhaps a fraction; no exponent.
_DECIMAL_OUT_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?$"


@dataclass(frozen=True, slots=True)
class _DecimalString:
    """Annotation of a ``Decimal`` given as a JSON string matching ``pattern``
    (a JSON number is refused), positive unless zero is allowed."""

    pattern: str
    positive: bool
    example: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self._parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                format_decimal, return_schema=core_schema.str_schema()
            ),
        )

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "pattern": self.pattern, "examples": [self.example]}

    def _parse(self, value: object) -> Decimal:
        what = "a positive decimal number" if self.positive else "a decimal number"
        if isinstance(value, Decimal) and value.is_finite():  # built in Python: held to the same rule
            value = format_decimal(value)
        if not isinstance(value, str):
            raise ValueError(f'{what} as a string (e.g. "{self.example}"), never a JSON number')  # noqa: TRY004 - pydantic wants ValueError
        if not re.fullmatch(self.pattern, value):
            raise ValueError(f'{what} as a string (e.g. "{self.example}"): digits, at most 9 decimals, no exponent')
        number = Decimal(value)
        if self.positive and number <= 0:
            raise ValueError(f"{what}: greater than zero")
        return number


Quantity = Annotated[Decimal, _DecimalString(_QUANTITY_PATTERN, positive=True, example="10")]
Price = Annotated[Decimal, _DecimalString(_QUANTITY_PATTERN, positive=True, example="187.25")]
Fees = Annotated[Decimal, _DecimalString(_QUANTITY_PATTERN, positive=False, example="1.5")]
CashAmount = Annotated[Decimal, _DecimalString(_AMOUNT_PATTERN, positive=True, example="10000")]
#: Any decimal this service answers with.
DecimalOut = Annotated[
    Decimal,
    PlainSerializer(format_decimal, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _DECIMAL_OUT_PATTERN, "examples": ["-12.5"]}),
]
Symbol = Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["AAPL"])]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class PortfolioIn(_In):
    name: str = Field(min_length=1, max_length=100, examples=["Long term"])
    #: ISO 4217 code; a label only (no conversion: quotes are valued as they come).
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a name needs a visible character")
        if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise ValueError("a name holds no control characters")
        return value


class PortfolioOut(BaseModel):
    id: uuid.UUID
    name: str
    currency: str
    cash: DecimalOut
    created_at: datetime


class TradeIn(_In):
    """A buy or a sell of ``quantity`` units of ``symbol`` at ``price`` each."""

    kind: Literal["buy", "sell"]
    symbol: Symbol
    quantity: Quantity
    price: Price
    fees: Fees = Decimal(0)
    #: When it happened; now if not given. The ledger applies transactions in the
    #: order they are recorded, whatever this says.
    executed_at: AwareDatetime | None = None


class CashIn(_In):
    """Cash into (deposit) or out of (withdraw) the portfolio."""

    kind: Literal["deposit", "withdraw"]
    amount: CashAmount
    executed_at: AwareDatetime | None = None


TransactionIn = Annotated[TradeIn | CashIn, Field(discriminator="kind")]


class TransactionOut(BaseModel):
    id: uuid.UUID
    #: The transaction's place in its portfolio's ledger (1, 2, ...).
    seq: int
    kind: Literal["buy", "sell", "deposit", "withdraw"]
    symbol: str | None
    quantity: DecimalOut | None
    price: DecimalOut | None
    fees: DecimalOut
    #: Quantity times price for a trade; the sum moved for a deposit or withdrawal.
    amount: DecimalOut
    #: A sell's proceeds less fees less the average cost of what it sold.
    realised_pnl: DecimalOut | None
    executed_at: datetime
    recorded_at: datetime


class TransactionPage(BaseModel):
    """Newest first. ``next_cursor``, when set, is the ``cursor`` of the next (older) page."""

    items: list[TransactionOut]
    next_cursor: str | None


class HoldingOut(BaseModel):
    symbol: str
    quantity: DecimalOut
    cost_basis: DecimalOut
    #: Cost basis per unit; null when nothing is held.
    average_cost: DecimalOut | None
    realised: DecimalOut
    updated_at: datetime

    @classmethod
    def of(cls, symbol: str, position: Position, updated_at: datetime) -> HoldingOut:
        return cls(
            symbol=symbol,
            quantity=position.quantity,
            cost_basis=position.cost_basis,
            average_cost=position.average_cost,
            realised=position.realised,
            updated_at=updated_at,
        )


class HoldingValuation(BaseModel):
    symbol: str
    quantity: DecimalOut
    cost_basis: DecimalOut
    realised: DecimalOut
    #: ``fresh``: valued at its quote; ``stale``: the quote is older than
    #: ``quote_max_age_s`` and was not used; ``missing``: no quote. Null for a
    #: holding of nothing, which needs none.
    quote_status: QuoteStatus | None
    #: The quote's price, fresh or stale.
    price: DecimalOut | None
    #: Seconds since the quote's tick.
    quote_age_s: float | None
    #: Null unless the quote is fresh.
    market_value: DecimalOut | None
    unrealised: DecimalOut | None

    @classmethod
    def of(cls, value: HoldingValue) -> HoldingValuation:
        p = value.position
        return cls(
            symbol=value.symbol,
            quantity=p.quantity,
            cost_basis=p.cost_basis,
            realised=p.realised,
            quote_status=value.status,
            price=value.price,
            quote_age_s=value.quote_age_s,
            market_value=value.market_value,
            unrealised=value.unrealised,
        )


class ValuationTotals(BaseModel):
    """Market value, unrealised P&L and total value are null while a holding
    lacks a fresh quote (``stale_symbols``); the rest is always known."""

    market_value: DecimalOut | None
    cost_basis: DecimalOut
    unrealised: DecimalOut | None
    realised: DecimalOut
    cash: DecimalOut
    #: Market value plus cash.
    total_value: DecimalOut | None


class ValuationOut(BaseModel):
    portfolio_id: uuid.UUID
    currency: str
    #: When it was computed (it may come from a cache of a few seconds).
    as_of: datetime
    quote_max_age_s: float
    #: True when every open holding had a fresh quote.
    complete: bool
    #: Open holdings valued without a fresh quote (stale or missing).
    stale_symbols: list[str]
    holdings: list[HoldingValuation]
    totals: ValuationTotals

    @classmethod
    def of(
        cls, portfolio_id: uuid.UUID, currency: str, as_of: datetime, max_age_s: float, value: PortfolioValue
    ) -> ValuationOut:
        return cls(
            portfolio_id=portfolio_id,
            currency=currency,
            as_of=as_of,
            quote_max_age_s=max_age_s,
            complete=not value.unpriced,
            stale_symbols=list(value.unpriced),
            holdings=[HoldingValuation.of(h) for h in value.holdings],
            totals=ValuationTotals(
                market_value=value.market_value,
                cost_basis=value.cost_basis,
                unrealised=value.unrealised,
                realised=value.realised,
                cash=value.cash,
                total_value=value.total_value,
            ),
        )


Interval = Literal["1m", "5m", "15m", "1h", "6h", "1d"]


class HistoryPoint(BaseModel):
    """The portfolio at the last snapshot of a bucket. Values are null where that
    snapshot had an open holding without a fresh quote (``unpriced``)."""

    time: datetime
    market_value: DecimalOut | None
    cost_basis: DecimalOut
    cash: DecimalOut
    unrealised: DecimalOut | None
    realised: DecimalOut
    total_value: DecimalOut | None
    unpriced: int


class HistoryOut(BaseModel):
    portfolio_id: uuid.UUID
    interval: Interval
    #: The range asked for: from inclusive, to exclusive.
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    points: list[HistoryPoint]
