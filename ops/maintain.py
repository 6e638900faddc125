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

from nexanest.pipeline.edition import Edition, detect_edition
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.events import EventEmitter
from nexanest.pipeline.settings import RetentionSettings, Settings
from nexanest.schemas.events import EventType, Severity

COMPONENT: Final = "cli.maintain"

#: How ``stock_prices`` is compressed on the community edition: one segment per
#: symbol (the usual filter), rows in each segment newest first.
COMPRESS_SEGMENTBY: Final = "symbol"
COMPRESS_ORDERBY: Final = "time DESC, source_seq DESC"

#: Retention and compression jobs run once a day on a fixed schedule, half a day
#: apart (times of day in UTC): added together with the scheduler's defaults, the
#: first compression run started while a retention job dropped the chunk it had
#: picked ("chunk not found"). Harmless, but a failed job run every time is noise.
POLICY_EVERY: Final = timedelta(days=1)
RETENTION_AT: Final = timedelta(hours=1)
COMPRESSION_AT: Final = timedelta(hours=13)

# The next occurrence of a time of day ($n, UTC) after now: a policy's first run is
# then on its schedule, never at the moment it is added.
_NEXT_AT: Final = "date_trunc('day', now() - {at}, 'UTC') + INTERVAL '1 day' + {at}"
_ADD_RETENTION: Final = (
    "SELECT add_retention_policy($1::regclass, drop_after => $2::interval, schedule_interval => $3::interval,"
    f" initial_start => {_NEXT_AT.format(at='$4::interval')})"
)
_ADD_COMPRESSION: Final = (
    "SELECT add_compression_policy($1::regclass, compress_after => $2::interval, schedule_interval => $3::interval,"
    f" initial_start => {_NEXT_AT.format(at='$4::interval')})"
)


@dataclass(frozen=True, slots=True)
class RetentionRule:
    relation: str  # a hypertable, or a continuous aggregate on the community edition
    label: str
    keep: timedelta | None  # None: forever
    #: The relation a continuous aggregate is refreshed from (its window must end
    #: before that relation's retention); None for plain tables.
    source: str | None = None


def retention_rules(r: RetentionSettings, edition: Edition) -> list[RetentionRule]:
    """One rule per table the pipeline writes, in the order maintain treats them."""

    def keep(days: float) -> timedelta | None:
        return timedelta(days=days) if days > 0 else None

    if edition == "apache":  # rollup tables the consumer keeps, independent of the raw ticks
        bars = [
            RetentionRule(f"ohlcv_{res}_rollup", f"{res} bars", keep(days))
            for res, days in (
                ("1m", r.bars_1m_days),
                ("5m", r.bars_5m_days),
                ("1h", r.bars_1h_days),
                ("1d", r.bars_1d_days),
            )
        ]
    else:  # hierarchical continuous aggregates: each refreshes from the level below
        bars = [
            RetentionRule("ohlcv_1m_cagg", "1m bars", keep(r.bars_1m_days), source="stock_prices"),
            RetentionRule("ohlcv_5m_cagg", "5m bars", keep(r.bars_5m_days), source="ohlcv_1m_cagg"),
            RetentionRule("ohlcv_1h_cagg", "1h bars", keep(r.bars_1h_days), source="ohlcv_5m_cagg"),
            RetentionRule("ohlcv_1d_cagg", "1d bars", keep(r.bars_1d_days), source="ohlcv_1h_cagg"),
        ]
    return [
        RetentionRule("stock_prices", "raw ticks", keep(r.raw_ticks_days)),
        *bars,
        RetentionRule("market_indices", "market indices", keep(r.market_indices_days)),
        RetentionRule("system_events", "system events", keep(r.system_events_days)),
    ]


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


# -- community edition: native policies ----------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the database has now for one relation."""

    relation: str
    exists: bool = True
    retention: timedelta | None = None  # drop_after of its retention policy; None: no policy
    #: Time of day (UTC) of the retention job's daily fixed schedule; None: another schedule.
    retention_at: timedelta | None = None
    refresh_job: int | None = None  # its continuous aggregate refresh policy, if any
    refresh_start: timedelta | None = None  # that policy's start_offset; None: from the beginning
    compression_enabled: bool = False
    compression: timedelta | None = None  # compress_after of its compression policy
    compression_at: timedelta | None = None  # as retention_at, for the compression job


@dataclass(frozen=True, slots=True)
class PolicyAction:
    relation: str
    description: str
    statements: tuple[tuple[str, tuple[Any, ...]], ...]


def _clock(at: timedelta) -> str:
    return f"{at // timedelta(hours=1):02d}:{at % timedelta(hours=1) // timedelta(minutes=1):02d} UTC"


def _days(interval: timedelta | None) -> str:
    if interval is None:
        return "forever"
    days = interval / timedelta(days=1)
    return f"{days:g} days" if days != 1 else "1 day"


def refresh_window(source_keep: timedelta) -> timedelta:
    """The longest refresh window that stays clear of the source's retention,
    with a day's margin (half the retention for very short ones)."""
    margin = min(timedelta(days=1), source_keep / 2)
    return source_keep - margin


# alter_job replaces the whole config, so the job's own is read and edited.
_SET_REFRESH_START: Final = (
    "SELECT alter_job(j.job_id, config => jsonb_set(j.config, '{start_offset}', to_jsonb($2::interval::text)))"
    "  FROM timescaledb_information.jobs j WHERE j.job_id = $1"
)


def plan_policies(
    rules: Sequence[RetentionRule],
    states: dict[str, PolicyState],
    *,
    compress_after: timedelta | None,
    late_ticks: timedelta,
) -> tuple[list[PolicyAction], list[str]]:
    """The actions that make the native policies match ``rules`` (pure: the
    caller read ``states`` and runs the actions). Returns (actions, notes).

    Order: refresh windows first (a refresh must never reach data about to be
    dropped), then compression, then retention.
    """
    keep = {r.relation: r.keep for r in rules}
    refresh: list[PolicyAction] = []
    compression: list[PolicyAction] = []
    retention: list[PolicyAction] = []
    notes: list[str] = []
    for rule in rules:
        state = states.get(rule.relation, PolicyState(rule.relation, exists=False))
        rel = rule.relation
        if not state.exists:
            notes.append(f"{rel} does not exist; skipped")
            continue
        # Retention.
        if rule.keep is None and state.retention is not None:
            retention.append(
                PolicyAction(
                    rel,
                    "remove the retention policy (keep forever)",
                    (("SELECT remove_retention_policy($1::regclass)", (rel,)),),
                )
            )
        elif rule.keep is not None and (state.retention != rule.keep or state.retention_at != RETENTION_AT):
            steps: list[tuple[str, tuple[Any, ...]]] = []
            if state.retention is not None:
                steps.append(("SELECT remove_retention_policy($1::regclass)", (rel,)))
            steps.append((_ADD_RETENTION, (rel, rule.keep, POLICY_EVERY, RETENTION_AT)))
            if state.retention == rule.keep:
                what = f"reschedule retention policy: daily at {_clock(RETENTION_AT)}"
            else:
                verb = "add" if state.retention is None else f"replace ({_days(state.retention)})"
                what = f"{verb} retention policy: drop chunks older than {_days(rule.keep)}"
            retention.append(PolicyAction(rel, what, tuple(steps)))
        # The refresh window of a continuous aggregate, inside its source's retention.
        source_keep = keep.get(rule.source) if rule.source is not None else None
        if source_keep is not None:
            window = refresh_window(source_keep)
            if state.refresh_job is None:
                notes.append(
                    f"{rel} has no refresh policy: nothing keeps it current (or empties it after {rule.source} drops)"
                )
            elif state.refresh_start is None or state.refresh_start > window:
                refresh.append(
                    PolicyAction(
                        rel,
                        f"refresh window from {_days(state.refresh_start) if state.refresh_start else 'the beginning'} "
                        f"to the last {_days(window)} ({rule.source} keeps {_days(source_keep)})",
                        (
                            (
                                _SET_REFRESH_START,
                                (state.refresh_job, window),
                            ),
                        ),
                    )
                )
            if window < late_ticks:
                notes.append(
                    f"{rel} refreshes only the last {_days(window)}, less than the {_days(late_ticks)} a late tick may "
                    "be behind: run `nexanest bars repair` after loading older ticks"
                )
        # Compression of the raw ticks.
        if rel == "stock_prices":
            if compress_after is not None:
                if not state.compression_enabled:
                    compression.append(
                        PolicyAction(
                            rel,
                            f"enable compression (segment by {COMPRESS_SEGMENTBY}, order by {COMPRESS_ORDERBY})",
                            (
                                (
                                    "ALTER TABLE stock_prices SET (timescaledb.compress,"
                                    f" timescaledb.compress_segmentby = '{COMPRESS_SEGMENTBY}',"
                                    f" timescaledb.compress_orderby = '{COMPRESS_ORDERBY}')",
                                    (),
                                ),
                            ),
                        )
                    )
                if state.compression != compress_after or state.compression_at != COMPRESSION_AT:
                    steps = []
                    if state.compression is not None:
                        steps.append(("SELECT remove_compression_policy($1::regclass)", (rel,)))
                    steps.append((_ADD_COMPRESSION, (rel, compress_after, POLICY_EVERY, COMPRESSION_AT)))
                    what = (
                        f"reschedule compression policy: daily at {_clock(COMPRESSION_AT)}"
                        if state.compression == compress_after
                        else f"compress chunks older than {_days(compress_after)}"
                    )
                    compression.append(PolicyAction(rel, what, tuple(steps)))
                if compress_after <= late_ticks:
                    notes.append(
                        f"stock_prices is compressed after {_days(compress_after)}, within the {_days(late_ticks)} "
                        "a late tick may be behind: such ticks go into compressed chunks (slower, but correct)"
                    )
            elif state.compression is not None:
                compression.append(
                    PolicyAction(
                        rel,
                        "remove the compression policy (compressed chunks stay compressed)",
                        (("SELECT remove_compression_policy($1::regclass)", (rel,)),),
                    )
                )
    return refresh + compression + retention, notes


_TARGET: Final = """
SELECT hypertable_schema AS schema, hypertable_name AS name, false AS cagg, compression_enabled
  FROM timescaledb_information.hypertables WHERE hypertable_name = $1
UNION ALL
SELECT materialization_hypertable_schema, materialization_hypertable_name, true, false
  FROM timescaledb_information.continuous_aggregates WHERE view_name = $1
"""
_JOB: Final = f"""
SELECT job_id, (config->>$3)::interval AS value,
       CASE WHEN fixed_schedule AND schedule_interval = INTERVAL '{POLICY_EVERY.days} day' AND initial_start IS NOT NULL
            THEN initial_start - date_trunc('day', initial_start, 'UTC') END AS at
  FROM timescaledb_information.jobs
 WHERE proc_name = $4 AND hypertable_schema = $1 AND hypertable_name = $2
 ORDER BY job_id LIMIT 1
"""


async def read_policy_state(conn: Any, relation: str) -> PolicyState:
    """The policies of ``relation`` (a hypertable or a continuous aggregate, whose
    jobs are registered on its materialization hypertable)."""
    target = await conn.fetchrow(_TARGET, relation)
    if target is None:
        return PolicyState(relation, exists=False)
    where = (target["schema"], target["name"])
    retention = await conn.fetchrow(_JOB, *where, "drop_after", "policy_retention")
    refresh = (
        await conn.fetchrow(_JOB, *where, "start_offset", "policy_refresh_continuous_aggregate")
        if target["cagg"]
        else None
    )
    compression = await conn.fetchrow(_JOB, *where, "compress_after", "policy_compression")
    return PolicyState(
        relation,
        retention=None if retention is None else retention["value"],
        retention_at=None if retention is None else retention["at"],
        refresh_job=None if refresh is None else refresh["job_id"],
        refresh_start=None if refresh is None else refresh["value"],
        compression_enabled=bool(target["compression_enabled"]),
        compression=None if compression is None else compression["value"],
        compression_at=None if compression is None else compression["at"],
    )


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
