"""The community edition's side of ``nexanest maintain``: plan the native
policies (retention per table and continuous aggregate, compression of
``stock_prices``, refresh windows inside their sources' retention) from the
settings and the policies the database has, so that running it again changes
nothing. Pure planning (``plan_policies``) is apart from reading the state
(``read_policy_state``); ``maintain.py`` applies the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from nexanest.ops.retention import RetentionRule

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
