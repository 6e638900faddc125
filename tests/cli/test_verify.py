"""``nexanest verify``: arguments and the empty window (unit). The comparison runs
against the real services in ``tests/ops/test_verify.py``, through the command too."""

from __future__ import annotations

import asyncio
import time

import pytest

from nexanest.cli.main import parse_args
from nexanest.cli.runtime import EXIT_USAGE
from nexanest.cli.verify import cmd_verify
from nexanest.pipeline.settings import Settings

S = 1_000_000_000


def test_verify_arguments() -> None:
    before = time.time_ns()
    args = parse_args(["verify", "--from", "-10m", "--to", "-1m", "--source", "feed-1", "--json"])
    after = time.time_ns()
    assert args.handler is cmd_verify
    assert before - 600 * S <= args.from_ns <= after - 600 * S
    assert before - 60 * S <= args.to_ns <= after - 60 * S
    assert (args.source, args.json, args.topic, args.all) == ("feed-1", True, None, False)
    args = parse_args(["verify", "--from", "2025-11-24T16:00:00Z"])
    assert args.from_ns == 1_764_000_000 * S
    assert args.to_ns >= before  # default: now


@pytest.mark.parametrize(
    "argv",
    [
        ("verify",),  # --from is required
        ("verify", "--from", "1764000000"),  # seconds, not ns
        ("verify", "--from", "-10"),  # no unit
    ],
)
def test_bad_verify_arguments_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == EXIT_USAGE
    assert "error" in capsys.readouterr().err


async def test_an_empty_window_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Found before anything connects."""
    args = parse_args(["verify", "--from", "2025-11-24T17:00:00Z", "--to", "2025-11-24T16:00:00Z"])
    assert await cmd_verify(Settings(), args, asyncio.Event()) == EXIT_USAGE
    assert "is not before --to" in capsys.readouterr().err
