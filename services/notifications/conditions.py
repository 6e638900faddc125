"""When an alert fires and when it re-arms: pure functions, no I/O.

An alert is ``armed`` or ``fired``. An armed alert fires when its condition holds;
a fired one waits until the price has come back past the threshold by the
alert's hysteresis, and only then is armed again. So a price hovering on the
line fires once, not at every tick, and each real crossing fires exactly once.

- ``crosses_above`` (threshold ``T``, hysteresis ``h``, prices): fires at a price
  ``>= T``; re-arms at a price ``< T - h``.
- ``crosses_below``: fires at a price ``<= T``; re-arms at a price ``> T + h``.
- ``moves_pct`` (``T`` and ``h`` in percent, a window of ``w`` seconds): the move
  is the larger of the rise from the lowest price of the last ``w`` seconds and
  the fall from the highest, in percent of that price. Fires at a move ``>= T``;
  re-arms once it is ``< T - h``.

A new (or changed) crossing alert starts ``fired`` when the price is already on
the far side of its threshold (``initial_state``): only a crossing fires, never
the state the market happens to be in when the alert is set.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

Kind = Literal["crosses_above", "crosses_below", "moves_pct"]
State = Literal["armed", "fired"]
Transition = Literal["fire", "rearm"]
KINDS: Final[tuple[Kind, ...]] = ("crosses_above", "crosses_below", "moves_pct")
_HUNDRED: Final = Decimal(100)


@dataclass(frozen=True, slots=True)
class Rule:
    """An alert's condition. ``window_s`` is set for ``moves_pct`` alone."""

    kind: Kind
    threshold: Decimal
    hysteresis: Decimal = Decimal(0)
    window_s: int | None = None


def initial_state(rule: Rule, price: Decimal | None) -> State:
    """The state a crossing alert starts in at the current ``price`` (``None``:
    no quote yet): ``fired`` when the price is already past the threshold, so
    that the first notification is a real crossing. ``moves_pct`` starts armed."""
    if price is None or rule.kind == "moves_pct":
        return "armed"
    if rule.kind == "crosses_above":
        return "fired" if price >= rule.threshold else "armed"
    return "fired" if price <= rule.threshold else "armed"


def step(rule: Rule, state: State, price: Decimal, move_pct: Decimal | None = None) -> Transition | None:
    """What a new ``price`` does to an alert in ``state``: ``fire``, ``rearm`` or
    nothing. ``move_pct`` is the window's move (``PriceWindow.move_pct``), needed
    for ``moves_pct`` alone."""
    threshold, hysteresis = rule.threshold, rule.hysteresis
    if rule.kind == "crosses_above":
        if state == "armed":
            return "fire" if price >= threshold else None
        return "rearm" if price < threshold - hysteresis else None
    if rule.kind == "crosses_below":
        if state == "armed":
            return "fire" if price <= threshold else None
        return "rearm" if price > threshold + hysteresis else None
    if move_pct is None:
        raise ValueError("a moves_pct alert needs the window's move")
    if state == "armed":
        return "fire" if move_pct >= threshold else None
    return "rearm" if move_pct < threshold - hysteresis else None


class PriceWindow:
    """The lowest and highest price of the last ``window_s`` seconds of one symbol,
    in amortised constant time per price (two monotonic queues). Times are the
    ticks' ``ts_ns``, which the quote script only moves forward."""

    __slots__ = ("_highs", "_lows", "_window_ns")

    def __init__(self, window_s: int) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        self._window_ns = window_s * 1_000_000_000
        self._lows: deque[tuple[int, Decimal]] = deque()  # prices rising from the left
        self._highs: deque[tuple[int, Decimal]] = deque()  # prices falling from the left

    def add(self, ts_ns: int, price: Decimal) -> None:
        """Take the price of ``ts_ns`` and forget what is older than the window."""
        while self._lows and self._lows[-1][1] >= price:
            self._lows.pop()
        self._lows.append((ts_ns, price))
        while self._highs and self._highs[-1][1] <= price:
            self._highs.pop()
        self._highs.append((ts_ns, price))
        oldest = ts_ns - self._window_ns
        while self._lows[0][0] < oldest:
            self._lows.popleft()
        while self._highs[0][0] < oldest:
            self._highs.popleft()

    def move_pct(self, price: Decimal) -> Decimal:
        """The larger of the rise of ``price`` from the window's low and its fall
        from the window's high, in percent (0 with no prices or a zero low)."""
        if not self._lows:
            return Decimal(0)
        low, high = self._lows[0][1], self._highs[0][1]
        rise = (price - low) / low * _HUNDRED if low > 0 else Decimal(0)
        fall = (high - price) / high * _HUNDRED if high > 0 else Decimal(0)
        return max(rise, fall)
