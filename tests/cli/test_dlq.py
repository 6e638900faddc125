"""``nexanest dlq inspect`` and ``dlq replay``: arguments (unit). The commands run
against the real services in ``tests/ops/test_dlq.py``."""

from __future__ import annotations

import time

import pytest

from nexanest.cli.dlq import cmd_dlq_inspect, cmd_dlq_replay
from nexanest.cli.main import parse_args
from nexanest.cli.runtime import EXIT_USAGE


def test_dlq_arguments() -> None:
    args = parse_args(["dlq", "replay", "--reason", "bad_symbol", "--reason", "undecodable", "--since", "-1h"])
    assert args.handler is cmd_dlq_replay
    assert (args.reason, args.dry_run, args.limit) == (["bad_symbol", "undecodable"], False, 20)
    assert args.since < time.time_ns()
    assert parse_args(["dlq", "replay", "--dry-run"]).dry_run is True
    args = parse_args(["dlq", "inspect", "--limit", "5"])
    assert (args.handler, args.limit, args.json) == (cmd_dlq_inspect, 5, False)


@pytest.mark.parametrize("argv", [("dlq",), ("dlq", "replay", "--reason", "typo"), ("dlq", "inspect", "--limit", "0")])
def test_bad_dlq_arguments_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == EXIT_USAGE
    assert "error" in capsys.readouterr().err
