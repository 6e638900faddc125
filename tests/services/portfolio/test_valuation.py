"""Valuation at quotes (unit): fresh quotes are used, stale and missing ones never."""

from __future__ import annotations

from decimal import Decimal as D

from nexanest.services.portfolio.ledger import Position
from nexanest.services.portfolio.valuation import Quote, value_portfolio

NOW_NS = 1_800_000_000_000_000_000
MAX_AGE_NS = 60 * 10**9


def test_fresh_quotes_value_each_holding_and_the_total() -> None:
    value = value_portfolio(
        D(100),
        {"AAA": Position(D(10), D(1000), D(5)), "BBB": Position(D("2.5"), D(50), D(0))},
        {"AAA": Quote(D("110.5"), NOW_NS - 10**9), "BBB": Quote(D(30), NOW_NS)},
        now_ns=NOW_NS,
        max_age_ns=MAX_AGE_NS,
    )
    aaa, bbb = value.holdings
    assert (aaa.status, aaa.market_value, aaa.unrealised, aaa.quote_age_s) == ("fresh", D(1105), D(105), 1.0)
    assert (bbb.status, bbb.market_value, bbb.unrealised) == ("fresh", D(75), D(25))
    assert value.market_value == D(1180)
    assert value.cost_basis == D(1050)
    assert value.unrealised == D(130)
    assert value.realised == D(5)
    assert value.total_value == D(1280)
    assert value.unpriced == ()
    assert value.positions == 2


def test_a_stale_quote_is_reported_with_its_age_and_not_used() -> None:
    value = value_portfolio(
        D(0),
        {"AAA": Position(D(1), D(10), D(0)), "BBB": Position(D(1), D(10), D(0))},
        {"AAA": Quote(D(11), NOW_NS - MAX_AGE_NS), "BBB": Quote(D(12), NOW_NS - MAX_AGE_NS - 1)},
        now_ns=NOW_NS,
        max_age_ns=MAX_AGE_NS,
    )
    aaa, bbb = value.holdings
    assert aaa.status == "fresh"  # exactly the limit is still fresh
    assert (bbb.status, bbb.price, bbb.quote_age_s, bbb.market_value, bbb.unrealised) == (
        "stale",
        D(12),
        60.0,
        None,
        None,
    )
    assert value.unpriced == ("BBB",)
    assert (value.market_value, value.unrealised, value.total_value) == (None, None, None)
    assert value.cost_basis == D(20)


def test_a_missing_quote_leaves_the_total_unknown_and_a_closed_holding_needs_none() -> None:
    value = value_portfolio(
        D(3),
        {"GONE": Position(D(0), D(0), D(-4)), "NONE": Position(D(1), D(2), D(0))},
        {},
        now_ns=NOW_NS,
        max_age_ns=MAX_AGE_NS,
    )
    gone, none = value.holdings
    assert (gone.status, gone.market_value, gone.unrealised) == (None, D(0), D(0))
    assert (none.status, none.price, none.market_value) == ("missing", None, None)
    assert value.unpriced == ("NONE",)
    assert value.realised == D(-4)
    assert value.positions == 1
    closed_only = value_portfolio(D(3), {"GONE": Position(D(0), D(0), D(-4))}, {}, now_ns=NOW_NS, max_age_ns=1)
    assert (closed_only.market_value, closed_only.total_value, closed_only.unpriced) == (D(0), D(3), ())


def test_a_quote_from_a_clock_slightly_ahead_has_age_zero() -> None:
    value = value_portfolio(
        D(0), {"AAA": Position(D(1), D(1), D(0))}, {"AAA": Quote(D(2), NOW_NS + 10**9)}, now_ns=NOW_NS, max_age_ns=1
    )
    assert value.holdings[0].quote_age_s == 0.0
    assert value.holdings[0].status == "fresh"


def test_market_values_round_to_nine_places_half_to_even() -> None:
    value = value_portfolio(
        D(0),
        {"AAA": Position(D("0.000000001"), D(0), D(0))},
        {"AAA": Quote(D("2.5"), NOW_NS)},
        now_ns=NOW_NS,
        max_age_ns=MAX_AGE_NS,
    )
    assert value.market_value == D("0.000000002")  # 0.0000000025: half, to even
