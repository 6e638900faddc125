"""``nexanest maintain``: retention and compression of the market data, on either edition.

How long each kind of data stays is in ``settings.retention`` (raw ticks 30
days, 1m bars a year, coarser bars forever, system events 90 days, market
indices a year). What enforces it depends on the TimescaleDB edition
(``pipeline/edition.py``):

- **Apache** (Debian's build, the local stack): no job scheduler and no
  compression, so this command is the job. It drops, per table, the chunks
  whose whole time range is older than the retention (``drop_chunks``; whole
  chunks only, so a table keeps up to one chunk interval more than asked), one
  transaction per table. Run it on a schedule: cron or a systemd timer, or
  ``nexanest maintain --every 1h``.
- **Community** (``timescale``: the official images, the compose stack): the
  database enforces retention itself. This command makes the native policies
  match the settings: a retention policy per table and continuous aggregate
  (``add_retention_policy``; replaced when the interval differs, removed for
  "forever"), compression of ``stock_prices`` after
  ``compress_ticks_after_days`` (``ALTER TABLE ... SET (timescaledb.compress)``
  once, then ``add_compression_policy``), and a refresh window for every
  continuous aggregate that ends before its source's retention: a refresh over
  a range whose source rows were dropped would otherwise empty those bars
  (0003_ohlcv.timescale.sql creates the refresh policies with no start). Running
  it again changes nothing.

It runs as the owner role (``timescale.admin_dsn``): dropping chunks and
changing policies need the owner. A run that changed something (not a dry run)
is recorded as a ``maintenance_done`` system event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from nexanest.ops.maintain_policies import PolicyAction, _days, plan_policies, read_policy_state
from nexanest.ops.retention import RetentionRule, retention_rules
from nexanest.pipeline.edition import Edition, detect_edition
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.events import EventEmitter
from nexanest.pipeline.settings import RetentionSettings, Settings
from nexanest.schemas.events import EventType, Severity

COMPONENT: Final = "cli.maintain"

# -- Apache edition: drop_chunks ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    name: str
    range_start: datetime | None
    range_end: datetime | None
    bytes: int


@dataclass(slots=True)
class TableResult:
    rule: RetentionRule
    #: Chunks dropped (or, in a dry run, that would be).
    chunks: list[Chunk] = field(default_factory=list)
    missing: bool = False  # the relation does not exist (an older schema)


# show_chunks and drop_chunks in one transaction see the same now(), so they
# select the same chunks.
_OLD_CHUNKS: Final = """
SELECT format('%I.%I', n.nspname, k.relname) AS name, c.range_start, c.range_end,
       pg_total_relation_size(s.chunk) AS bytes
  FROM show_chunks($1::regclass, older_than => $2::interval) AS s(chunk)
  JOIN pg_class k ON k.oid = s.chunk
  JOIN pg_namespace n ON n.oid = k.relnamespace
  LEFT JOIN timescaledb_information.chunks c ON c.chunk_schema = n.nspname AND c.chunk_name = k.relname
 ORDER BY c.range_start
"""
_DROP_CHUNKS: Final = "SELECT drop_chunks($1::regclass, older_than => $2::interval)::text AS name"
_IS_HYPERTABLE: Final = "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = $1)"


async def drop_old_chunks(conn: Any, rule: RetentionRule, *, dry_run: bool) -> TableResult:
    """Drop (or only list) the chunks of ``rule.relation`` older than ``rule.keep``."""
    result = TableResult(rule)
    if rule.keep is None:
        return result
    if not await conn.fetchval(_IS_HYPERTABLE, rule.relation):
        result.missing = True
        return result
    async with conn.transaction():
        old = [
            Chunk(r["name"], r["range_start"], r["range_end"], r["bytes"])
            for r in await conn.fetch(_OLD_CHUNKS, rule.relation, rule.keep)
        ]
        if dry_run or not old:
            result.chunks = old
            return result
        dropped = {r["name"] for r in await conn.fetch(_DROP_CHUNKS, rule.relation, rule.keep)}
    result.chunks = [c for c in old if c.name in dropped]
    return result


# -- the command ------------------------------------------------------------------


@dataclass(slots=True)
class MaintenanceReport:
    edition: Edition
    dry_run: bool
    tables: list[TableResult] = field(default_factory=list)  # apache
    actions: list[PolicyAction] = field(default_factory=list)  # community
    notes: list[str] = field(default_factory=list)

    @property
    def chunks_dropped(self) -> int:
        return sum(len(t.chunks) for t in self.tables)

    @property
    def bytes_dropped(self) -> int:
        return sum(c.bytes for t in self.tables for c in t.chunks)

    def to_json(self) -> dict[str, Any]:
        return {
            "edition": self.edition,
            "dry_run": self.dry_run,
            "tables": [
                {
                    "relation": t.rule.relation,
                    "what": t.rule.label,
                    "keep_days": None if t.rule.keep is None else t.rule.keep / timedelta(days=1),
                    "missing": t.missing,
                    "chunks": [
                        {
                            "name": c.name,
                            "range_start": _iso(c.range_start),
                            "range_end": _iso(c.range_end),
                            "bytes": c.bytes,
                        }
                        for c in t.chunks
                    ],
                }
                for t in self.tables
            ],
            "actions": [{"relation": a.relation, "action": a.description} for a in self.actions],
            "notes": self.notes,
        }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def run_maintenance(
    conn: Any,
    retention: RetentionSettings,
    *,
    late_ticks: timedelta,
    dry_run: bool,
    rules: Sequence[RetentionRule] | None = None,
) -> MaintenanceReport:
    """One maintenance pass over ``conn`` (the owner role); ``rules`` overrides
    the tables and retentions taken from ``retention`` (tests use a scratch table)."""
    edition = await detect_edition(conn)
    rules = list(rules) if rules is not None else retention_rules(retention, edition)
    report = MaintenanceReport(edition, dry_run)
    if edition == "apache":
        for rule in rules:
            report.tables.append(await drop_old_chunks(conn, rule, dry_run=dry_run))
        if retention.compress_ticks_after_days > 0:
            report.notes.append("compression needs the community (timescale) edition; not available here")
        return report
    states = {rule.relation: await read_policy_state(conn, rule.relation) for rule in rules}
    compress_after = (
        timedelta(days=retention.compress_ticks_after_days) if retention.compress_ticks_after_days > 0 else None
    )
    report.actions, report.notes = plan_policies(rules, states, compress_after=compress_after, late_ticks=late_ticks)
    if not dry_run and report.actions:
        async with conn.transaction():
            for action in report.actions:
                for sql, args in action.statements:
                    await conn.execute(sql, *args)
    return report


async def maintain(
    settings: Settings, *, dry_run: bool = False, rules: Sequence[RetentionRule] | None = None
) -> MaintenanceReport:
    """Connect as the owner role, run one pass, and record a real run as a
    ``maintenance_done`` system event (``maintenance_failed`` if it raised)."""
    try:
        conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConfigurationError(
            f"cannot connect to TimescaleDB as the owner role ({type(exc).__name__}: {exc}); "
            "is it running (make db-status)?"
        ) from exc
    events = EventEmitter(COMPONENT, pool=conn, producer=None, topic=settings.kafka.events_topic)
    try:
        try:
            report = await run_maintenance(
                conn,
                settings.retention,
                late_ticks=timedelta(seconds=settings.validation.max_past_s),
                dry_run=dry_run,
                rules=rules,
            )
        except Exception as exc:
            if not dry_run:
                await events.emit(EventType.MAINTENANCE_FAILED, f"maintenance failed: {exc!r}", Severity.ERROR)
            raise
        if not dry_run:
            await events.emit(
                EventType.MAINTENANCE_DONE,
                summary(report),
                edition=report.edition,
                chunks_dropped=report.chunks_dropped,
                bytes_dropped=report.bytes_dropped,
                tables=", ".join(
                    f"{t.rule.relation}={len(t.chunks)}" for t in report.tables if t.rule.keep is not None
                ),
                policy_changes=len(report.actions),
            )
        return report
    finally:
        await conn.close()


def summary(report: MaintenanceReport) -> str:
    if report.edition == "apache":
        verb = "would drop" if report.dry_run else "dropped"
        return f"{verb} {report.chunks_dropped} chunks ({_size(report.bytes_dropped)}) older than their retention"
    verb = "would make" if report.dry_run else "made"
    return (
        f"{verb} {len(report.actions)} policy changes"
        if report.actions
        else "native policies already match the settings"
    )


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def format_report(report: MaintenanceReport) -> str:
    lines: list[str] = []
    dry = " (dry run: nothing changes)" if report.dry_run else ""
    if report.edition == "apache":
        lines.append(f"TimescaleDB edition apache: drop chunks older than each retention{dry}")
        width = max((len(t.rule.relation) for t in report.tables), default=0)
        verb = "would drop" if report.dry_run else "dropped"
        for t in report.tables:
            head = f"  {t.rule.relation:<{width}}  {t.rule.label:<14}  keep {_days(t.rule.keep):<10}"
            if t.missing:
                lines.append(f"{head}  not a hypertable here; skipped")
            elif t.rule.keep is None:
                lines.append(head.rstrip())
            elif not t.chunks:
                lines.append(f"{head}  nothing older")
            else:
                span = f"{_iso(t.chunks[0].range_start)} .. {_iso(t.chunks[-1].range_end)}"
                size = _size(sum(c.bytes for c in t.chunks))
                lines.append(f"{head}  {verb} {len(t.chunks)} chunks ({size}), {span}")
    else:
        lines.append(f"TimescaleDB edition timescale: native retention, compression and refresh policies{dry}")
        verb = "would" if report.dry_run else "did"
        lines.extend(f"  {verb}: {a.relation}: {a.description}" for a in report.actions)
    lines.append(summary(report))
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)
