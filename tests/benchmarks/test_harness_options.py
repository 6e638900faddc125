"""A benchmark states its options as data (``OPTIONS``) and the frame parses them: a default that
``--quick`` changed silently, or an explicit value that ``--quick`` overrode, would make a run
measure something other than its command line says."""

from __future__ import annotations

from types import ModuleType

import pytest

from benchmarks.harness.run import parse_args


def scenario() -> ModuleType:
    module = ModuleType("benchmarks.scenarios.example", "An example benchmark.")
    module.OPTIONS = {  # type: ignore[attr-defined]
        "ticks": (1_000_000, 200_000, "ticks in the feed"),
        "rates": ([5000, 20000, 50000], [5000], "offered ticks/s"),
        "stall_seconds": (20.0, None, "the stall"),
        "native": (False, None, "include native frames"),
        "only": ("", None, "one path"),
    }
    return module


def test_defaults_full_and_quick_and_what_the_result_records() -> None:
    full = parse_args(scenario(), [])
    assert (full.ticks, full.rates, full.stall_seconds, full.native, full.only) == (
        1_000_000,
        [5000, 20000, 50000],
        20.0,
        False,
        "",
    )
    quick = parse_args(scenario(), ["--quick"])
    assert (quick.ticks, quick.rates, quick.stall_seconds) == (200_000, [5000], 20.0)  # no quick default: the full one
    assert quick.parameters == {
        "symbols": 300,
        "seed": 1,
        "ticks": 200_000,
        "rates": [5000],
        "stall_seconds": 20.0,
        "native": False,
        "only": "",
    }


def test_an_explicit_value_wins_over_quick_and_values_are_typed_by_their_default() -> None:
    args = parse_args(
        scenario(), ["--quick", "--ticks", "5000", "--rates", "1,2,3", "--stall-seconds", "7", "--native"]
    )
    assert (args.ticks, args.rates, args.stall_seconds, args.native) == (5000, [1, 2, 3], 7.0, True)
    with pytest.raises(SystemExit):
        parse_args(scenario(), ["--ticks", "many"])


def test_help_states_each_default_and_what_quick_changes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(scenario(), ["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "ticks in the feed (1,000,000; quick 200,000)" in shown
    assert "offered ticks/s (5000,20000,50000; quick 5000)" in shown
    assert "ticks 200,000, rates 5000" in shown  # --quick's own help
