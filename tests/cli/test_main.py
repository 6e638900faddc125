"""The command lines: argument parsing only (unit)."""

from __future__ import annotations

import argparse
import time

import pytest

from nexanest.cli.main import _join_time_values, _synthetic_config, build_parser

S = 1_000_000_000


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(_join_time_values(argv))


def test_offsets_into_the_past_need_no_equals_sign() -> None:
    assert _join_time_values(["verify", "--from", "-10m", "--to", "now"]) == ["verify", "--from=-10m", "--to", "now"]
    assert _join_time_values(["dlq", "replay", "--since", "-1h"]) == ["dlq", "replay", "--since=-1h"]
    assert _join_time_values(["verify", "--from"]) == ["verify", "--from"]  # argparse reports it
    assert _join_time_values(["verify", "--from", "--json"]) == ["verify", "--from", "--json"]


def test_verify_arguments() -> None:
    before = time.time_ns()
    args = parse("verify", "--from", "-10m", "--to", "-1m", "--source", "feed-1", "--json")
    after = time.time_ns()
    assert before - 600 * S <= args.from_ns <= after - 600 * S
    assert before - 60 * S <= args.to_ns <= after - 60 * S
    assert (args.source, args.json, args.topic) == ("feed-1", True, None)
    args = parse("verify", "--from", "2025-11-24T16:00:00Z")
    assert args.from_ns == 1_764_000_000 * S
    assert args.to_ns >= before  # default: now


def test_dlq_arguments() -> None:
    args = parse("dlq", "replay", "--reason", "bad_symbol", "--reason", "undecodable", "--since", "-1h", "--dry-run")
    assert args.reason == ["bad_symbol", "undecodable"]
    assert args.dry_run is True
    assert args.since < time.time_ns()
    assert parse("dlq", "inspect", "--limit", "5").limit == 5


def test_each_synthetic_run_gets_its_own_source_unless_given() -> None:
    first = _synthetic_config(parse("produce", "synthetic")).source
    second = _synthetic_config(parse("produce", "synthetic")).source
    assert first.startswith("synthetic-")
    assert second.startswith("synthetic-")
    assert first != second  # seq restarts at 0 each run: a shared tag would make ticks ambiguous
    assert _synthetic_config(parse("run", "--source", "feed-a")).source == "feed-a"


@pytest.mark.parametrize(
    "argv",
    [
        ("produce", "synthetic", "--source", ""),
        ("verify",),  # --from is required
        ("verify", "--from", "1764000000"),  # seconds, not ns
        ("verify", "--from", "-10"),  # no unit
        ("dlq", "replay", "--reason", "typo"),
        ("dlq",),
    ],
)
def test_bad_arguments_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
