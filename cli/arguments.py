"""Argument types and argv fix-ups shared by the command groups.

Each type raises ``argparse.ArgumentTypeError``, so a bad value is a usage
error (exit 2, with the option's name) before anything connects.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

TIME_HELP = "now, an offset like -10m or -1h30m, ns since the epoch, or ISO-8601 (UTC unless a zone is given)"

# The options whose value may be an offset into the past, such as -10m.
TIME_OPTIONS = ("--from", "--to", "--since")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def time_arg(text: str) -> int:
    """A point in time as ``ops.times.parse_time`` reads it, in ns since the epoch."""
    from nexanest.ops.times import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def since_arg(text: str) -> int:
    """A time as ``time_arg`` takes it, or a bare duration (``10m``, ``1h30m``): that long ago."""
    from nexanest.ops.times import parse_time

    bare = text.strip()
    if bare[:1].isdigit() and not bare.isdigit():
        with contextlib.suppress(ValueError):
            return parse_time("-" + bare)
    return time_arg(text)


def duration_arg(text: str) -> float:
    """A positive duration such as 30m or 1h30m, in seconds."""
    from nexanest.ops.times import parse_time

    try:
        seconds = parse_time("+" + text.strip().lstrip("+"), now_ns=0) / 1e9
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration like 30m or 1h, got {text}")
    return seconds


def source_tag(text: str) -> str:
    if not text or len(text) > 64 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"a source tag is 1-64 printable characters, not {text!r}")
    return text


def add_time_range(p: argparse.ArgumentParser) -> None:
    """``--from T`` (required) and ``--to T`` (default now), as ``from_ns`` and ``to_ns``."""
    p.add_argument("--from", dest="from_ns", type=time_arg, required=True, metavar="T", help=TIME_HELP)
    p.add_argument("--to", dest="to_ns", type=time_arg, default="now", metavar="T", help="end, exclusive (default now)")


def join_time_values(argv: Sequence[str]) -> list[str]:
    """``--from -10m`` -> ``--from=-10m``: argparse takes a value that starts
    with a dash for an option (and only knows negative numbers), so an offset
    into the past would otherwise need the ``=`` form."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in TIME_OPTIONS:
            value = next(args, None)
            if value is not None and value[:1] == "-" and value[1:2].isdigit():
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out
