"""Hysteresis and crossings (unit): an alert fires once per crossing, and a price
hovering on the line fires nothing more until it has come back past the band."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexanest.services.notifications.conditions import PriceWindow, Rule, State, initial_state, step

D = Decimal


def run(rule: Rule, prices: list[str], state: State = "armed") -> tuple[list[int], State]:
    """The indexes of the prices at which the alert fired, and its last state."""
    fired = []
    for n, price in enumerate(prices):
        transition = step(rule, state, D(price))
        if transition == "fire":
            fired.append(n)
            state = "fired"
        elif transition == "rearm":
            state = "armed"
    return fired, state


def test_crosses_above_fires_once_per_crossing_with_hysteresis() -> None:
    rule = Rule("crosses_above", D("100"), D("1"))
    # Up through 100, hovering around it (never below 99), down past the band, up again.
    fired, state = run(rule, ["98", "100", "99.5", "100.2", "99.01", "101", "98.99", "99.5", "100"])
    assert fired == [1, 8]
    assert state == "fired"


def test_crosses_below_mirrors_it() -> None:
    rule = Rule("crosses_below", D("50"), D("0.5"))
    fired, _ = run(rule, ["51", "50", "50.4", "49", "50.5", "50.51", "49.99"])
    assert fired == [1, 6]


def test_without_hysteresis_the_line_itself_does_not_rearm() -> None:
    rule = Rule("crosses_above", D("10"))
    fired, _ = run(rule, ["9", "10", "10", "10", "9.999999999", "10"])
    assert fired == [1, 5]


def test_a_new_alert_past_its_threshold_waits_for_a_crossing() -> None:
    above, below = Rule("crosses_above", D("100"), D("1")), Rule("crosses_below", D("100"), D("1"))
    assert initial_state(above, D("101")) == "fired"
    assert initial_state(above, D("99")) == "armed"
    assert initial_state(below, D("99")) == "fired"
    assert initial_state(below, None) == "armed"
    assert initial_state(Rule("moves_pct", D("5"), D("1"), 60), D("1")) == "armed"
    fired, _ = run(above, ["101", "102", "100.5", "98.9", "100"], state=initial_state(above, D("101")))
    assert fired == [4]


def test_moves_pct_needs_the_windows_move() -> None:
    with pytest.raises(ValueError, match="move"):
        step(Rule("moves_pct", D("5"), D("1"), 60), "armed", D("1"))


def test_moves_pct_fires_on_the_move_within_the_window_and_rearms_below_the_band() -> None:
    rule = Rule("moves_pct", D("5"), D("2"), 60)
    window = PriceWindow(60)
    state: State = "armed"
    fired = []
    s = 1_000_000_000
    # (seconds, price): +5% within the window fires; the move falls back under 3% only
    # once the low of 100 has left the 60 s window; then -5% fires again.
    ticks = [(0, "100"), (10, "103"), (20, "105"), (30, "104"), (61, "104"), (85, "104"), (90, "98.8")]
    for n, (t, price) in enumerate(ticks):
        window.add(t * s, D(price))
        transition = step(rule, state, D(price), window.move_pct(D(price)))
        if transition == "fire":
            fired.append(n)
            state = "fired"
        elif transition == "rearm":
            state = "armed"
    assert fired == [2, 6]


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=60), st.integers(1, 20))
def test_price_window_matches_a_scan(prices: list[int], window_s: int) -> None:
    """The monotonic queues agree with the plain min and max over the window."""
    window = PriceWindow(window_s)
    for t, p in enumerate(prices):
        window.add(t * 1_000_000_000, D(p))
        inside = [D(q) for u, q in enumerate(prices[: t + 1]) if u >= t - window_s]
        low, high, now = min(inside), max(inside), D(p)
        assert window.move_pct(now) == max((now - low) / low * 100, (high - now) / high * 100)


def expected_firings(prices: list[int], threshold: int, band: int) -> list[int]:
    """Where a crosses_above alert that starts armed must fire, found by searching
    the prices rather than by stepping a state: the first price at or above the
    threshold; after a firing, the first such price after the first price below
    ``threshold - band`` that follows it; and so on."""
    fired: list[int] = []
    start = 0
    while (hit := next((k for k in range(start, len(prices)) if prices[k] >= threshold), None)) is not None:
        fired.append(hit)
        dip = next((k for k in range(hit + 1, len(prices)) if prices[k] < threshold - band), None)
        if dip is None:
            break
        start = dip + 1
    return fired


@st.composite
def prices_and_band(draw: st.DrawFn) -> tuple[list[int], int]:
    """Prices around a threshold of 10,000 and a band; half the prices on the edges
    (``T``, ``T - 1``, ``T - h``, ``T - h - 1``), where an off-by-one shows."""
    band = draw(st.integers(min_value=0, max_value=500))
    edges = st.sampled_from([10_000, 9_999, 10_000 - band, 9_999 - band])
    prices = draw(st.lists(st.one_of(st.integers(min_value=9_000, max_value=11_000), edges), max_size=200))
    return prices, band


@given(prices_and_band())
def test_fires_alternate_with_real_crossings_of_the_band(case: tuple[list[int], int]) -> None:
    """Between two firings of a crosses_above alert the price went below T - h, and
    every firing is at a price >= T (no false firing); and it fires at exactly the
    prices an independent search finds (no missed crossing)."""
    prices, band = case
    rule = Rule("crosses_above", D(10_000), D(band))
    state: State = "armed"
    dipped = True
    fired = []
    for n, p in enumerate(prices):
        transition = step(rule, state, D(p))
        if transition == "fire":
            assert dipped
            assert p >= 10_000
            dipped = False
            state = "fired"
            fired.append(n)
        elif transition == "rearm":
            assert p < 10_000 - band
            dipped = True
            state = "armed"
    assert fired == expected_firings(prices, 10_000, band)


def test_the_independent_search_finds_every_crossing() -> None:
    """The reference itself, on the deterministic case above (T 100, h 1) scaled by 100."""
    prices = [9800, 10000, 9950, 10020, 9901, 10100, 9899, 9950, 10000]
    assert expected_firings(prices, 10_000, 100) == [1, 8]
    assert expected_firings([], 10_000, 0) == []
    assert expected_firings([10_000, 10_000, 9_999, 10_000], 10_000, 0) == [0, 3]
