"""``nexanest maintain``: the retention rules and the community-edition policy
plan (unit), dropping old chunks on the Apache edition (integration, on a
scratch hypertable so other tests' old ticks are left alone), and the native
policies on the community edition (integration, on the community cluster's test
database, fresh each session)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from nexanest.ops.maintain import format_report, maintain
from nexanest.ops.maintain_policies import COMPRESSION_AT, RETENTION_AT, PolicyState, plan_policies
from nexanest.ops.retention import RetentionRule, retention_rules
from nexanest.pipeline.settings import RetentionSettings, Settings
from tests.schemas.event_samples import assert_like_sample, event_of_row

DAY = timedelta(days=1)
WEEK = 7 * DAY


def test_default_retention_per_edition() -> None:
    apache = {r.relation: r.keep for r in retention_rules(RetentionSettings(), "apache")}
    assert apache == {
        "stock_prices": 30 * DAY,
        "ohlcv_1m_rollup": 365 * DAY,
        "ohlcv_5m_rollup": None,
        "ohlcv_1h_rollup": None,
        "ohlcv_1d_rollup": None,
        "market_indices": 365 * DAY,
        "system_events": 90 * DAY,
    }
    community = retention_rules(RetentionSettings(raw_ticks_days=0), "timescale")
    assert [(r.relation, r.source) for r in community if r.source] == [
        ("ohlcv_1m_cagg", "stock_prices"),
        ("ohlcv_5m_cagg", "ohlcv_1m_cagg"),
        ("ohlcv_1h_cagg", "ohlcv_5m_cagg"),
        ("ohlcv_1d_cagg", "ohlcv_1h_cagg"),
    ]
    assert community[0].keep is None  # 0 days: forever


def fresh_states(rules: list[RetentionRule]) -> dict[str, PolicyState]:
    """As 0003_ohlcv.timescale.sql leaves them: refresh policies from the beginning, nothing else."""
    return {r.relation: PolicyState(r.relation, refresh_job=100 + i if r.source else None) for i, r in enumerate(rules)}


def test_a_fresh_community_database_gets_every_policy_refresh_windows_first() -> None:
    rules = retention_rules(RetentionSettings(), "timescale")
    actions, notes = plan_policies(rules, fresh_states(rules), compress_after=8 * DAY, late_ticks=WEEK)
    described = [(a.relation, a.description) for a in actions]
    assert described == [
        ("ohlcv_1m_cagg", "refresh window from the beginning to the last 29 days (stock_prices keeps 30 days)"),
        ("ohlcv_5m_cagg", "refresh window from the beginning to the last 364 days (ohlcv_1m_cagg keeps 365 days)"),
        ("stock_prices", "enable compression (segment by symbol, order by time DESC, source_seq DESC)"),
        ("stock_prices", "compress chunks older than 8 days"),
        ("stock_prices", "add retention policy: drop chunks older than 30 days"),
        ("ohlcv_1m_cagg", "add retention policy: drop chunks older than 365 days"),
        ("market_indices", "add retention policy: drop chunks older than 365 days"),
        ("system_events", "add retention policy: drop chunks older than 90 days"),
    ]
    refresh = actions[0].statements
    assert [args for _, args in refresh] == [(101, 29 * DAY)]
    assert "alter_job" in refresh[0][0]
    assert notes == []


def test_policies_that_match_need_nothing_and_changed_settings_replace_them() -> None:
    rules = retention_rules(RetentionSettings(), "timescale")
    keep = {r.relation: r.keep for r in rules}
    states = fresh_states(rules)
    states = {
        rel: PolicyState(
            rel,
            retention=keep[rel],
            retention_at=RETENTION_AT if keep[rel] is not None else None,
            refresh_job=s.refresh_job,
            refresh_start=29 * DAY if rel == "ohlcv_1m_cagg" else 364 * DAY if rel == "ohlcv_5m_cagg" else None,
            compression_enabled=rel == "stock_prices",
            compression=8 * DAY if rel == "stock_prices" else None,
            compression_at=COMPRESSION_AT if rel == "stock_prices" else None,
        )
        for rel, s in states.items()
    }
    assert plan_policies(rules, states, compress_after=8 * DAY, late_ticks=WEEK) == ([], [])

    shorter = retention_rules(RetentionSettings(raw_ticks_days=14, system_events_days=0), "timescale")
    actions, _ = plan_policies(shorter, states, compress_after=None, late_ticks=WEEK)
    described = [(a.relation, a.description) for a in actions]
    assert described == [
        ("ohlcv_1m_cagg", "refresh window from 29 days to the last 13 days (stock_prices keeps 14 days)"),
        ("stock_prices", "remove the compression policy (compressed chunks stay compressed)"),
        ("stock_prices", "replace (30 days) retention policy: drop chunks older than 14 days"),
        ("system_events", "remove the retention policy (keep forever)"),
    ]
    replace = actions[2].statements
    assert [sql.split("(")[0] for sql, _ in replace] == [
        "SELECT remove_retention_policy",
        "SELECT add_retention_policy",
    ]


def test_retention_and_compression_run_half_a_day_apart_and_old_schedules_are_moved() -> None:
    """Issue 9: added with the scheduler's defaults, the first compression run raced
    a retention job ("chunk not found"). Both are daily, 12 hours apart; policies
    on another schedule (as earlier versions added them) are replaced."""
    assert (COMPRESSION_AT - RETENTION_AT).total_seconds() == 12 * 3600
    rules = retention_rules(RetentionSettings(), "timescale")
    actions, _ = plan_policies(rules, fresh_states(rules), compress_after=8 * DAY, late_ticks=WEEK)
    added = {(a.relation, sql.split("(")[0]): args for a in actions for sql, args in a.statements}
    assert added[("stock_prices", "SELECT add_retention_policy")] == ("stock_prices", 30 * DAY, DAY, RETENTION_AT)
    assert added[("stock_prices", "SELECT add_compression_policy")] == ("stock_prices", 8 * DAY, DAY, COMPRESSION_AT)

    unscheduled = {
        r.relation: PolicyState(r.relation, retention=r.keep, compression_enabled=True, compression=8 * DAY)
        for r in rules
        if r.relation == "stock_prices"
    }
    actions, _ = plan_policies(rules[:1], unscheduled, compress_after=8 * DAY, late_ticks=WEEK)
    assert [a.description for a in actions] == [
        "reschedule compression policy: daily at 13:00 UTC",
        "reschedule retention policy: daily at 01:00 UTC",
    ]
    assert [sql.split("(")[0] for a in actions for sql, _ in a.statements] == [
        "SELECT remove_compression_policy",
        "SELECT add_compression_policy",
        "SELECT remove_retention_policy",
        "SELECT add_retention_policy",
    ]


def test_short_windows_are_pointed_out() -> None:
    rules = retention_rules(RetentionSettings(raw_ticks_days=3, compress_ticks_after_days=2), "timescale")
    _, notes = plan_policies(rules, fresh_states(rules), compress_after=2 * DAY, late_ticks=WEEK)
    assert any(n.startswith("ohlcv_1m_cagg refreshes only the last 2 days") for n in notes)
    assert any(n.startswith("stock_prices is compressed after 2 days") for n in notes)


@pytest.fixture
async def scratch_hypertable(migrated: Settings, test_id: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A one-day-chunk hypertable, as the owner, with rows 40, 35, 29 and 0 days old."""
    table = f"maint_test_{test_id}"
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        await conn.execute(f"CREATE TABLE {table} (time TIMESTAMPTZ NOT NULL, age_days INTEGER NOT NULL)")
        await conn.execute(f"SELECT create_hypertable('{table}', 'time', chunk_time_interval => INTERVAL '1 day')")
        await conn.execute(
            f"INSERT INTO {table} SELECT now() - make_interval(days => d) - INTERVAL '1 minute', d"
            " FROM unnest(ARRAY[40, 35, 29, 0]) AS d"
        )
        yield conn, table
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


@pytest.mark.integration
async def test_apache_maintain_drops_chunks_older_than_the_retention_and_keeps_the_rest(
    migrated: Settings, scratch_hypertable: tuple[asyncpg.Connection, str], timescale_pool: asyncpg.Pool
) -> None:
    conn, table = scratch_hypertable
    # The Apache cluster; the community edition's retention is tested below on its own cluster.
    assert await conn.fetchval("SELECT current_setting('timescaledb.license', true)") == "apache"
    rules = [RetentionRule(table, "scratch", 30 * DAY)]

    dry = await maintain(migrated, dry_run=True, rules=rules)
    assert len(dry.tables[0].chunks) == 2
    assert await conn.fetchval(f"SELECT count(*) FROM show_chunks('{table}')") == 4
    assert "would drop 2 chunks" in format_report(dry)

    done = await maintain(migrated, rules=rules)
    assert [c.name for c in done.tables[0].chunks] == [c.name for c in dry.tables[0].chunks]
    assert done.chunks_dropped == 2
    assert done.tables[0].chunks[-1].range_end is not None
    assert await conn.fetchval(f"SELECT count(*) FROM show_chunks('{table}')") == 2
    assert [r["age_days"] for r in await conn.fetch(f"SELECT age_days FROM {table} ORDER BY time")] == [29, 0]

    again = await maintain(migrated, rules=rules)
    assert again.chunks_dropped == 0
    event = await timescale_pool.fetchrow(
        "SELECT * FROM system_events WHERE component = 'cli.maintain'"
        " AND event_type = 'maintenance_done' AND details->>'tables' = $1",
        f"{table}=2",
    )
    assert event is not None
    assert_like_sample(event_of_row(event), "cli.maintain")  # the wire format, the frozen sample's keys
    details = json.loads(event["details"])
    assert (details["edition"], details["chunks_dropped"]) == ("apache", 2)
    assert event["message"].startswith("dropped 2 chunks")


@pytest.mark.integration
async def test_a_dry_run_over_the_real_tables_changes_nothing(migrated: Settings) -> None:
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    snapshot = (
        "SELECT (SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name NOT LIKE 'maint_test_%'),"
        " (SELECT count(*) FROM timescaledb_information.jobs)"
    )
    try:
        before = tuple(await conn.fetchrow(snapshot))
        report = await maintain(migrated, dry_run=True)
        if report.edition == "apache":
            assert {t.rule.relation for t in report.tables} >= {"stock_prices", "system_events", "market_indices"}
            assert not any(t.missing for t in report.tables)
            for t in report.tables:
                for chunk in t.chunks:  # listed, still there
                    assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", chunk.name)
        # Chunks only disappear here by dropping; concurrent tests may add some.
        after = tuple(await conn.fetchrow(snapshot))
        assert after[0] >= before[0]
        assert after[1] == before[1]
    finally:
        await conn.close()


@pytest.mark.integration
@pytest.mark.timescale_license
async def test_community_maintain_sets_the_native_policies_once(community: Settings) -> None:
    """On a fresh database (issue 9: the refresh-window statement failed there, and
    the whole pass rolled back)."""
    conn = await asyncpg.connect(community.timescale.admin_dsn.get_secret_value())
    try:
        assert await conn.fetchval("SELECT current_setting('timescaledb.license', true)") == "timescale"
        report = await maintain(community)
        assert len(report.actions) == 8
        assert (await maintain(community, dry_run=True)).actions == []  # a second run has nothing to do
        policies = {
            (r["proc_name"], r["hypertable_name"])
            for r in await conn.fetch("SELECT proc_name, hypertable_name FROM timescaledb_information.jobs")
        }
        assert ("policy_retention", "stock_prices") in policies
        assert ("policy_compression", "stock_prices") in policies
        assert ("policy_retention", "system_events") in policies
        start = await conn.fetchval(
            "SELECT (j.config->>'start_offset')::interval FROM timescaledb_information.jobs j"
            " JOIN timescaledb_information.continuous_aggregates c"
            "   ON c.materialization_hypertable_name = j.hypertable_name"
            " WHERE c.view_name = 'ohlcv_1m_cagg' AND j.proc_name = 'policy_refresh_continuous_aggregate'"
        )
        assert start == 29 * DAY
    finally:
        await conn.close()


@pytest.mark.integration
@pytest.mark.timescale_license
async def test_community_retention_and_compression_jobs_run_apart(community: Settings) -> None:
    """Issue 9: the compression policy's first run raced the retention job."""
    await maintain(community)  # a no-op if the test above ran first
    conn = await asyncpg.connect(community.timescale.admin_dsn.get_secret_value())
    try:
        jobs = {
            r["proc_name"]: r
            for r in await conn.fetch(
                "SELECT proc_name, schedule_interval, fixed_schedule, next_start,"
                " next_start - date_trunc('day', next_start, 'UTC') AS at, next_start > now() AS later"
                "  FROM timescaledb_information.jobs"
                " WHERE hypertable_name = 'stock_prices' AND proc_name IN ('policy_retention', 'policy_compression')"
            )
        }
    finally:
        await conn.close()
    assert set(jobs) == {"policy_retention", "policy_compression"}
    for job in jobs.values():
        assert (job["schedule_interval"], job["fixed_schedule"], job["later"]) == (DAY, True, True)
    assert (jobs["policy_retention"]["at"], jobs["policy_compression"]["at"]) == (RETENTION_AT, COMPRESSION_AT)
