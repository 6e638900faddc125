"""Where a run's results go, and how its Markdown section is rendered.

A run always writes ``benchmarks/results/<name>-<time>.json`` and the section it
would add, ``<name>-<time>.md``: both git-ignored, so a run leaves the tree
clean. Only ``--update-results`` (``make bench-record``) inserts the section
into the committed ``benchmarks/RESULTS.md`` (newest first): record only a run
made on a quiet machine. Tables are data (a header and rows of cells), rendered
by ``table``, so each scenario states only what its columns hold.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[1]
RESULTS_DIR = BENCHMARKS / "results"
RESULTS_MD = BENCHMARKS / "RESULTS.md"
RUNS_MARKER = "<!-- runs: newest first; the suite inserts each new run below this line -->\n"


def n(value: float | None, digits: int = 0) -> str:
    """A figure for a table: thousands separated, ``n/a`` for a missing one."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def log(name: str) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return say


def table(header: str, rows: Iterable[Sequence[object]], align: str) -> list[str]:
    """A Markdown table: ``header`` is the column names joined by ``|``, ``align``
    one letter per column (``l`` or ``r``)."""
    cells_ = [header.split("|"), *([str(c) for c in row] for row in rows)]
    lines = [re.sub(r"\|  (?=\|)", "| ", "| " + " | ".join(cols) + " |") for cols in cells_]
    return [lines[0], "|" + "|".join({"l": "---", "r": "---:"}[a] for a in align) + "|", *lines[1:]]


def cells(record: dict[str, Any], spec: str) -> list[str]:
    """Table cells from a result: ``spec`` lists ``key:digits`` (``key`` alone: as it is)."""
    out = []
    for item in spec.split():
        key, _, digits = item.partition(":")
        value = record.get(key, "")  # a missing key is an empty cell, a missing figure n/a
        out.append(n(value, int(digits)) if digits and not isinstance(value, str) else str(value))
    return out


def heading(result: dict[str, Any], what: str, command_note: str = "") -> list[str]:
    """Title, command and machine: the first lines of every section."""
    m = result["machine"]
    return [
        f"## {result['started_at']} · {what} · run `{result['run_id']}`",
        "",
        f"Command: `{result['command']}` ({result['duration_s']:.0f} s{command_note})",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, shared; Python {m['python']}; Kafka "
        f"{m['kafka']}; PostgreSQL {m['postgresql']} + TimescaleDB {m['timescaledb']} ({m['timescaledb_license']}, "
        f"synchronous_commit={m['synchronous_commit']}, shared_buffers {m['shared_buffers']}); Redis {m['redis']}. "
        f"Load average {m['load_avg_at_start'][0]:.2f} at start, {m['load_avg_at_end'][0]:.2f} at end.",
        "",
    ]


def closing(result: dict[str, Any]) -> list[str]:
    """The restart warning (figures void) and any failed scenario, after the tables."""
    lines = []
    if names := result.get("restarted"):
        lines += ["", f"**Warning:** restarted during the run: {', '.join(names)}; treat these figures as void."]
    if errors := result.get("errors"):
        lines += ["", "**Failed scenarios** (no rate reported for them):", ""]
        lines += [f"- {name}: {err}" for name, err in errors.items()]
    return lines


def save(name: str, result: dict[str, Any], section: str, args: argparse.Namespace) -> None:
    """Write the JSON and the section to the results folder, print the section, and with
    ``--update-results`` insert it below RESULTS.md's marker (newest first; the file is
    read just before writing, since other benchmarks add their runs too)."""
    out = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(section)
    print(f"{section}\nJSON: {out}")
    if args.update_results:
        head, marker, tail = RESULTS_MD.read_text().partition(RUNS_MARKER)
        if not marker:
            raise RuntimeError(f"{RESULTS_MD} has no line {RUNS_MARKER.strip()!r}; not writing")
        RESULTS_MD.write_text(head + marker + "\n" + section.rstrip("\n") + "\n\n" + tail.lstrip("\n"))
