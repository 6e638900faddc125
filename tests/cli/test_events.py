"""``nexanest events``: its arguments (unit). Reading and following the events is
tested in ``tests/pipeline/test_events.py``."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from nexanest.cli.events import cmd_events
from nexanest.cli.main import parse_args

S = 1_000_000_000


def parse(*argv: str) -> argparse.Namespace:
    return parse_args(argv)


def test_events_arguments() -> None:
    before = time.time_ns()
    args = parse("events", "--since", "10m", "--component", "consumer", "--severity", "warning", "--follow", "--json")
    assert args.handler is cmd_events
    assert before - 600 * S - S <= args.since <= time.time_ns() - 600 * S
    assert (args.component, args.severity, args.follow, args.json) == ("consumer", "warning", True, True)
    assert before - 3600 * S - S <= parse("events").since <= time.time_ns() - 3600 * S  # default: 1h
    assert before - 90 * 60 * S - S <= parse("events", "--since", "-1h30m").since <= time.time_ns() - 90 * 60 * S
    assert parse("events", "--since", "2026-01-02").since == int(datetime(2026, 1, 2, tzinfo=UTC).timestamp()) * S
