"""What ``nexanest verify`` found, and how it is shown: per partition and symbol
tallies (counts and checksums on both sides), the missing, doubled and
unexpected seq ranges, and the text report (``--json`` prints ``to_json``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from nexanest.ops.times import format_ns
from nexanest.schemas.ticks import format_e9

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DB_PREFETCH: Final = 10_000

# -- the report -------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Counts and exact price sums (x 1e9) of one partition or symbol on both sides."""

    kafka: int = 0
    kafka_sum_e9: int = 0
    db: int = 0
    db_sum_e9: int = 0

    @property
    def matches(self) -> bool:
        return self.kafka == self.db and self.kafka_sum_e9 == self.db_sum_e9

    def to_json(self) -> dict[str, Any]:
        return {
            "kafka": self.kafka,
            "db": self.db,
            "kafka_sum": format_e9(self.kafka_sum_e9),
            "db_sum": format_e9(self.db_sum_e9),
            "matches": self.matches,
        }


@dataclass(frozen=True, slots=True)
class SeqRange:
    """``seq`` values ``first..last`` (inclusive) of one source."""

    source: str
    first: int
    last: int

    def __str__(self) -> str:
        span = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{self.source}:{span}"


@dataclass
class VerifyReport:
    topic: str
    from_ns: int
    to_ns: int
    #: The sources compared (seen in Kafka, or the one asked for).
    sources: list[str]
    #: Records read from Kafka, in the window or not.
    kafka_records: int = 0
    #: Distinct valid ticks in the window.
    kafka_ticks: int = 0
    #: Extra copies of a tick already seen in the topic.
    kafka_repeats: int = 0
    #: Records in the window that fail validation, by reason (expected in the dead-letter topic).
    invalid: dict[str, int] = field(default_factory=dict)
    #: Rows of the compared sources in the window.
    db_rows: int = 0
    missing: int = 0
    duplicates: int = 0
    unexpected: int = 0
    #: The first few (source, seq) ranges of each kind, for a closer look.
    missing_sample: list[SeqRange] = field(default_factory=list)
    duplicate_sample: list[SeqRange] = field(default_factory=list)
    unexpected_sample: list[SeqRange] = field(default_factory=list)
    partitions: dict[int, Tally] = field(default_factory=dict)
    symbols: dict[str, Tally] = field(default_factory=dict)
    #: Partitions where retention has deleted records that may have been in the window.
    truncated_partitions: list[int] = field(default_factory=list)
    #: At most this many ranges are kept in each sample.
    sample_ranges: int = 20
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "from_ns": self.from_ns,
            "to_ns": self.to_ns,
            "from": format_ns(self.from_ns),
            "to": format_ns(self.to_ns),
            "sources": self.sources,
            "ok": self.ok,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "kafka_records": self.kafka_records,
            "kafka_ticks": self.kafka_ticks,
            "kafka_repeats": self.kafka_repeats,
            "invalid": dict(sorted(self.invalid.items())),
            "db_rows": self.db_rows,
            "missing_sample": [str(r) for r in self.missing_sample],
            "duplicate_sample": [str(r) for r in self.duplicate_sample],
            "unexpected_sample": [str(r) for r in self.unexpected_sample],
            "partitions": {str(p): t.to_json() for p, t in sorted(self.partitions.items())},
            "symbols": {s: t.to_json() for s, t in sorted(self.symbols.items())},
            "truncated_partitions": self.truncated_partitions,
            "elapsed_s": round(self.elapsed_s, 3),
        }


# -- rendering ----------------------------------------------------------------------


def format_report(report: VerifyReport, *, all_symbols: bool = False, max_symbols: int = 30) -> str:
    """The report as a text table. Symbols are listed in full up to
    ``max_symbols`` (or with ``all_symbols``); beyond that only those whose
    two sides differ."""
    out: list[str] = []
    sources = ", ".join(report.sources) if report.sources else "none seen"
    out.append(f"verify {report.topic}  [{format_ns(report.from_ns)}, {format_ns(report.to_ns)})  sources: {sources}")
    invalid = ", ".join(f"{k}={v:,}" for k, v in sorted(report.invalid.items()))
    out.append(
        f"kafka        {report.kafka_ticks:,} ticks in the window ({report.kafka_records:,} records read"
        + (f", {report.kafka_repeats:,} repeated" if report.kafka_repeats else "")
        + ")"
    )
    out.append(
        f"invalid      {sum(report.invalid.values()):,} (expected in the dead-letter topic{invalid and ': '}{invalid})"
    )
    out.append(f"timescaledb  {report.db_rows:,} rows")
    out.append("")
    out.extend(_table("partition", {str(p): t for p, t in sorted(report.partitions.items())}))
    out.append("")
    symbols = sorted(report.symbols.items())
    shown = symbols if all_symbols or len(symbols) <= max_symbols else [(s, t) for s, t in symbols if not t.matches]
    out.extend(_table("symbol", dict(shown)))
    if len(shown) < len(symbols):
        out.append(f"({len(symbols) - len(shown):,} more symbols match on both sides; --all lists them)")
    out.append("")
    for label, count, sample in (
        ("missing", report.missing, report.missing_sample),
        ("duplicates", report.duplicates, report.duplicate_sample),
        ("unexpected", report.unexpected, report.unexpected_sample),
    ):
        line = f"{label:<12} {count:,}"
        if sample:
            line += "   " + " ".join(str(r) for r in sample) + (" ..." if len(sample) >= report.sample_ranges else "")
        out.append(line)
    if report.truncated_partitions:
        out.append(
            f"note: retention has deleted the oldest records of partitions {report.truncated_partitions}; "
            "rows of ticks no longer in Kafka count as unexpected"
        )
    if report.kafka_ticks == 0 and not report.invalid:
        out.append("note: Kafka holds no ticks in this window")
    verdict = "OK" if report.ok else "FAIL: ticks missing or duplicated in TimescaleDB"
    out.append(f"result       {verdict}  ({report.elapsed_s:.1f}s)")
    return "\n".join(out)


def _table(title: str, rows: dict[str, Tally]) -> Iterable[str]:
    header = (title, "kafka", "db", "kafka sum", "db sum", "")
    body = [
        (
            key,
            f"{t.kafka:,}",
            f"{t.db:,}",
            format_e9(t.kafka_sum_e9),
            format_e9(t.db_sum_e9),
            "ok" if t.matches else "DIFFERS",
        )
        for key, t in rows.items()
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    for row in [header, *body]:
        yield "  ".join(
            cell.ljust(widths[i]) if i in (0, 5) else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
