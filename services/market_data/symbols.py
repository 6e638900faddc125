"""Symbols as requests name them: one in a path, or a comma-separated list.

A symbol must match the pipeline's own rule (``settings.validation.symbol_pattern``,
the rule a tick's symbol passed to be stored), so a request can only name keys
and rows the pipeline could have written. Error messages name the position of a
bad symbol, never its text: what a client sent is not echoed back.
"""

from __future__ import annotations

import re

from nexanest.schemas.ticks import MAX_SYMBOL_CHARS


class InvalidSymbols(ValueError):
    """The list is empty, too long, or holds a symbol that breaks the rule."""


def parse_symbol_list(text: str, rule: re.Pattern[str], max_count: int) -> list[str]:
    """The distinct symbols of ``A,B,C`` in their first order; raises ``InvalidSymbols``."""
    if len(text) > max_count * (MAX_SYMBOL_CHARS + 1):
        raise InvalidSymbols(f"at most {max_count} symbols may be asked for at once")
    parts = text.split(",")
    for position, symbol in enumerate(parts, start=1):
        if not rule.fullmatch(symbol):
            raise InvalidSymbols(f"symbol {position} of the list is not a valid symbol")
    symbols = list(dict.fromkeys(parts))
    if len(symbols) > max_count:
        raise InvalidSymbols(f"at most {max_count} symbols may be asked for at once")
    return symbols
