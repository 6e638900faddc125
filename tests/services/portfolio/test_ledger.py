"""The bookkeeping rules (unit): average cost, realised P&L, cash that never goes negative."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexanest.services.portfolio import ledger
from nexanest.services.portfolio.ledger import Position, Refused, TooLarge, format_decimal

NONE = Position()


def test_a_buy_pays_amount_and_fees_from_cash_into_the_cost_basis() -> None:
    booked = ledger.buy(D(1000), NONE, D(10), D("12.5"), D(1))
    assert booked.cash == D(874)
    assert booked.amount == D(125)
    assert booked.position == Position(D(10), D(126), D(0))
    assert booked.realised_pnl is None


def test_buys_average_their_costs() -> None:
    first = ledger.buy(D(10_000), NONE, D(10), D(100), D(0))
    assert first.position is not None
    second = ledger.buy(first.cash, first.position, D(30), D(120), D(4))
    assert second.position == Position(D(40), D(4604), D(0))
    assert second.position.average_cost == D("115.1")
    assert second.cash == D(10_000) - D(1000) - D(3604)


def test_a_sell_realises_proceeds_less_fees_less_the_average_cost_of_what_it_sells() -> None:
    held = Position(D(40), D(4604), D(0))  # average 115.1
    booked = ledger.sell(D(0), held, D(10), D(130), D(2))
    assert booked.amount == D(1300)
    assert booked.cash == D(1298)
    # 1300 - 2 - 10 * 115.1
    assert booked.realised_pnl == D(147)
    assert booked.position == Position(D(30), D(3453), D(147))


def test_selling_everything_takes_the_whole_cost_basis_and_keeps_the_realised_pnl() -> None:
    held = Position(D(3), D(10), D(5))  # average 3.333...: a third of the basis is not exact
    part = ledger.sell(D(0), held, D(1), D(4), D(0))
    assert part.position == Position(D(2), D("6.666666667"), D("5.666666667"))
    assert part.realised_pnl == D("0.666666667")
    rest = ledger.sell(part.cash, part.position, D(2), D(4), D(0))
    # 8 - 6.666666667: the rounding of the first sell comes back, and 5 + (12 - 10) is realised in all
    assert rest.realised_pnl == D("1.333333333")
    assert rest.position == Position(D(0), D(0), D(7))
    assert rest.position.average_cost is None
    assert rest.cash == D(12)


def test_a_sell_beyond_the_holding_is_refused() -> None:
    with pytest.raises(Refused, match="holds 2"):
        ledger.sell(D(0), Position(D(2), D(20), D(0)), D("2.000000001"), D(10), D(0))
    with pytest.raises(Refused):
        ledger.sell(D(100), NONE, D(1), D(10), D(0))


def test_cash_never_goes_negative() -> None:
    with pytest.raises(Refused, match="cash"):
        ledger.withdraw(D(100), D("100.000000001"))
    with pytest.raises(Refused, match="cash"):
        ledger.buy(D(100), NONE, D(10), D(10), D("0.000000001"))
    with pytest.raises(Refused, match="fees"):  # fees beyond proceeds, paid from cash that is not there
        ledger.sell(D(0), Position(D(1), D(1), D(0)), D(1), D(1), D(2))
    assert ledger.withdraw(D(100), D(100)).cash == D(0)
    assert ledger.deposit(D(0), D("0.5")).cash == D("0.5")


def test_amounts_are_rounded_to_nine_places_half_to_even() -> None:
    # 0.000000001 * 0.5 = 0.0000000005: half, to even (0); 0.000000003 * 0.5: to 0.000000002
    assert ledger.buy(D(1), NONE, D("0.000000001"), D("0.5"), D(0)).amount == D(0)
    assert ledger.buy(D(1), NONE, D("0.000000003"), D("0.5"), D(0)).amount == D("0.000000002")


def test_products_of_the_largest_inputs_are_exact() -> None:
    """28 significant digits (Python's default context) would round these; the ledger's does not."""
    q, p = D("99999999999.999999999"), D("99999999999.999999999")
    booked = ledger.deposit(D(0), D("999999999999999.999999999"))
    with pytest.raises(Refused):
        ledger.buy(booked.cash, NONE, q, p, D(0))
    big = ledger.buy(D(10) ** 23, NONE, q, p, D(0))
    # (10^11 - 10^-9)^2 = 10^22 - 200 + 10^-18, whose last term rounds away
    assert big.amount == D("9999999999999999999800")


def test_balances_beyond_the_database_are_refused_as_too_large() -> None:
    with pytest.raises(TooLarge):
        ledger.deposit(D(10) ** 29 - 1, D(1))
    with pytest.raises(TooLarge):
        ledger.buy(D(10) ** 28, Position(D("99999999999"), D(1), D(0)), D(1), D(1), D(0))


def test_the_models_guard_against_non_positive_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        ledger.deposit(D(0), D(0))
    with pytest.raises(ValueError, match="positive"):
        ledger.buy(D(0), NONE, D("NaN"), D(1), D(0))


amounts = st.decimals(min_value=D("0.000000001"), max_value=D(1_000_000), places=9)


@given(
    buys=st.lists(
        st.tuples(amounts, amounts, st.decimals(min_value=0, max_value=10, places=9)), min_size=1, max_size=6
    ),
    sold=st.lists(st.decimals(min_value=0, max_value=1, places=3), max_size=6),
    price=amounts,
)
def test_cash_plus_cost_basis_plus_realised_is_conserved(buys: list[tuple[D, D, D]], sold: list[D], price: D) -> None:
    """Money moves between cash, cost basis and realised P&L, and only fees and the
    difference between sale and cost leave: cash + cost basis = deposits + realised."""
    deposited = D(10) ** 15
    cash, held = deposited, NONE
    for quantity, buy_price, fees in buys:
        booked = ledger.buy(cash, held, quantity, buy_price, fees)
        assert booked.position is not None
        cash, held = booked.cash, booked.position
    for fraction in sold:
        quantity = ledger.round_amount(held.quantity * fraction)
        if quantity <= 0:
            continue
        booked = ledger.sell(cash, held, quantity, price, D(0))
        assert booked.position is not None
        cash, held = booked.cash, booked.position
        assert held.quantity >= 0
        assert held.cost_basis >= 0
    assert cash + held.cost_basis == deposited + held.realised
    if held.quantity == 0:
        assert held.cost_basis == 0


def test_decimals_are_written_plainly() -> None:
    assert format_decimal(D("100.000000000")) == "100"
    assert format_decimal(D("1E+3")) == "1000"
    assert format_decimal(D("-0.000000000")) == "0"
    assert format_decimal(D("-12.50")) == "-12.5"
    assert format_decimal(D("0.000000001")) == "0.000000001"
