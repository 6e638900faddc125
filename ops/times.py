"""Time arguments of the operator tools (``--from``, ``--since``, ...) and their
rendering: one parser, so every command reads ``now``, ``-10m``, ns since the
epoch and ISO-8601 the same way."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3_600 * 1_000_000_000,
    "d": 86_400 * 1_000_000_000,
    "w": 7 * 86_400 * 1_000_000_000,
}
_PART: Final = r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d|w)"
_RELATIVE: Final = re.compile(rf"([+-])((?:{_PART})+)")
_FRACTION: Final = re.compile(r"(T?\d{2}:\d{2}:\d{2}|T\d{6})[.,](\d+)")
#: Integers below this are rejected as times: they are seconds or milliseconds
#: typed where nanoseconds were meant (1e17 ns is March 1973), and a window in
#: 1970 would verify nothing and report success.
_MIN_PLAUSIBLE_NS: Final = 10**17


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Parse a time argument into ns since the epoch.

    Accepted: ``now``; a signed offset from now such as ``-10m``, ``-1h30m``,
    ``+5s`` or ``-0.5s`` (units ns, us, ms, s, m, h, d, w); an integer number of
    ns since the epoch (``0`` or at least 1e17, anything between is rejected as
    a likely unit mistake); or ISO-8601 (``2025-11-25T14:30:00Z``,
    ``2025-11-25 14:30:00.123456789+01:00``, ``2025-11-25``), where a time
    without a zone is UTC and fractions keep all nine digits.
    Raises ``ValueError`` with a hint on anything else.
    """
    text = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    if text.lower() == "now":
        return now
    if text.isdigit():
        value = int(text)
        if 0 < value < _MIN_PLAUSIBLE_NS:
            raise ValueError(
                f"{text!r} is not a plausible time in ns since the epoch (seconds or ms?); "
                "give ns, an ISO-8601 time, or an offset like -10m"
            )
        return value
    relative = _RELATIVE.fullmatch(text)
    if relative:
        sign, body = relative.groups()[:2]
        offset = sum(int(Decimal(n) * _UNIT_NS[u]) for n, u in re.findall(_PART, body))
        return now + offset if sign == "+" else now - offset
    if re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{text!r}: a relative time needs a unit, e.g. -10s or -5m")
    return _parse_iso(text)


def _parse_iso(text: str) -> int:
    extra_ns = 0
    fraction = _FRACTION.search(text)
    if fraction:
        digits = fraction.group(2)
        if len(digits) > 9:
            raise ValueError(f"{text!r}: more than 9 fractional digits")
        extra_ns = int(digits.ljust(9, "0"))
        text = text[: fraction.start(2) - 1] + text[fraction.end(2) :]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time: use now, an offset like -10m, ns since the epoch, "
            "or ISO-8601 such as 2025-11-25T14:30:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // timedelta(microseconds=1) * 1_000 + extra_ns


def format_ns(ts_ns: int) -> str:
    """ISO-8601 in UTC with all nine fractional digits, e.g. ``2025-11-25T14:30:00.000000001Z``."""
    seconds, frac = divmod(ts_ns, 1_000_000_000)
    base = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z" if frac else f"{base}Z"
