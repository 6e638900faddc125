"""Argument types and the argv fix-up shared by the command groups (unit)."""

from __future__ import annotations

import argparse
import time

import pytest

from nexanest.cli.arguments import duration_arg, join_time_values, since_arg, source_tag, time_arg

S = 1_000_000_000


def test_offsets_into_the_past_need_no_equals_sign() -> None:
    assert join_time_values(["verify", "--from", "-10m", "--to", "now"]) == ["verify", "--from=-10m", "--to", "now"]
    assert join_time_values(["dlq", "replay", "--since", "-1h"]) == ["dlq", "replay", "--since=-1h"]
    assert join_time_values(["verify", "--from"]) == ["verify", "--from"]  # argparse reports it
    assert join_time_values(["verify", "--from", "--json"]) == ["verify", "--from", "--json"]


def test_times_durations_and_since() -> None:
    assert time_arg("2025-11-24T16:00:00Z") == 1_764_000_000 * S
    before = time.time_ns()
    assert before - 600 * S - S <= since_arg("10m") <= time.time_ns() - 600 * S  # a bare duration: that long ago
    assert since_arg("1764000000000000000") == 1_764_000_000 * S  # digits alone stay ns
    assert duration_arg("1h30m") == 5400.0


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (time_arg, "1764000000"),  # seconds, not ns
        (time_arg, "-10"),  # no unit
        (duration_arg, "0s"),
        (duration_arg, "soon"),
        (source_tag, ""),
        (source_tag, "x" * 65),
        (source_tag, "tab\there"),
    ],
)
def test_bad_values_are_argument_errors(parse: object, text: str) -> None:
    assert callable(parse)
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)
