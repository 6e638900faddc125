"""The request and response bodies (unit): decimals only as strings, never floats."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from pydantic import TypeAdapter, ValidationError

from nexanest.services.portfolio.ledger import Position
from nexanest.services.portfolio.models import (
    CashIn,
    HoldingOut,
    PortfolioIn,
    TradeIn,
    TransactionIn,
    ValuationOut,
)
from nexanest.services.portfolio.valuation import Quote, value_portfolio

transaction = TypeAdapter(TransactionIn)


def test_trades_and_cash_movements_parse_by_kind() -> None:
    buy = transaction.validate_json(b'{"kind":"buy","symbol":"AAPL","quantity":"10","price":"187.25","fees":"1"}')
    assert isinstance(buy, TradeIn)
    assert (buy.quantity, buy.price, buy.fees) == (D(10), D("187.25"), D(1))
    deposit = transaction.validate_json(b'{"kind":"deposit","amount":"10000.5"}')
    assert isinstance(deposit, CashIn)
    assert deposit.amount == D("10000.5")


@pytest.mark.parametrize(
    "body",
    [
        b'{"kind":"buy","symbol":"AAPL","quantity":10,"price":"1"}',  # a JSON number
        b'{"kind":"buy","symbol":"AAPL","quantity":"0.1","price":1.5}',  # a float
        b'{"kind":"buy","symbol":"AAPL","quantity":"1e3","price":"1"}',  # an exponent
        b'{"kind":"buy","symbol":"AAPL","quantity":"0","price":"1"}',  # not positive
        b'{"kind":"buy","symbol":"AAPL","quantity":"-1","price":"1"}',
        b'{"kind":"buy","symbol":"AAPL","quantity":"1.0000000001","price":"1"}',  # 10 decimals
        b'{"kind":"buy","symbol":"AAPL","quantity":"100000000000","price":"1"}',  # 12 integer digits
        b'{"kind":"buy","symbol":"AAPL","quantity":"NaN","price":"1"}',
        b'{"kind":"buy","symbol":"aapl","quantity":"1","price":"1"}',  # not a symbol
        b'{"kind":"buy","quantity":"1","price":"1"}',  # no symbol
        b'{"kind":"deposit","amount":"1","symbol":"AAPL"}',  # a cash movement names no symbol
        b'{"kind":"withdraw","amount":"0"}',
        b'{"kind":"dividend","amount":"1"}',
        b'{"kind":"buy","symbol":"AAPL","quantity":"1","price":"1","executed_at":"2026-01-01T00:00:00"}',  # naive
    ],
)
def test_bad_transactions_are_refused(body: bytes) -> None:
    with pytest.raises(ValidationError):
        transaction.validate_json(body)


def test_zero_fees_are_fine() -> None:
    sell = transaction.validate_json(b'{"kind":"sell","symbol":"X","quantity":"1","price":"1","fees":"0"}')
    assert isinstance(sell, TradeIn)
    assert sell.fees == 0


@pytest.mark.parametrize("name", ["", "   ", "a\x00b", "line\nbreak", "x" * 101])
def test_portfolio_names_are_visible_text(name: str) -> None:
    with pytest.raises(ValidationError):
        PortfolioIn(name=name)


def test_a_portfolio_defaults_to_usd_and_takes_iso_codes_only() -> None:
    assert PortfolioIn(name="Long term").currency == "USD"
    with pytest.raises(ValidationError):
        PortfolioIn(name="x", currency="usd")


def test_decimals_are_answered_as_plain_strings() -> None:
    held = HoldingOut.of("AAA", Position(D("10.000000000"), D("1000.5"), D("-0.25")), datetime(2026, 1, 1, tzinfo=UTC))
    body = held.model_dump(mode="json")
    assert body["quantity"] == "10"
    assert body["cost_basis"] == "1000.5"
    assert body["average_cost"] == "100.05"
    assert body["realised"] == "-0.25"


def test_the_openapi_schema_says_string_for_every_decimal() -> None:
    schema = TypeAdapter(TransactionIn).json_schema()
    trade = schema["$defs"]["TradeIn"]["properties"]
    assert trade["quantity"]["type"] == "string"
    assert trade["price"]["type"] == "string"
    out = ValuationOut.model_json_schema(mode="serialization")
    totals = out["$defs"]["ValuationTotals"]["properties"]
    assert totals["cost_basis"]["type"] == "string"
    assert {"type": "string"}.items() <= totals["market_value"]["anyOf"][0].items()


def test_a_valuation_body_carries_no_number_where_a_decimal_belongs() -> None:
    value = value_portfolio(
        D("0.1"), {"AAA": Position(D(3), D("0.3"), D(0))}, {"AAA": Quote(D("0.1"), 1)}, now_ns=1, max_age_ns=1
    )
    out = ValuationOut.of(uuid.uuid4(), "USD", datetime(2026, 1, 1, tzinfo=UTC), 60.0, value)
    body = out.model_dump(mode="json")
    assert body["totals"] == {
        "market_value": "0.3",
        "cost_basis": "0.3",
        "unrealised": "0",
        "realised": "0",
        "cash": "0.1",
        "total_value": "0.4",
    }
    assert body["holdings"][0]["price"] == "0.1"
