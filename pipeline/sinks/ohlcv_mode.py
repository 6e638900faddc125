"""Who keeps the OHLCV bars on this database, and when a committed tick is in them.

``resolve_rollups``: the pipeline (rollup tables merged in the consumer's
transaction, the Apache edition) or TimescaleDB itself (continuous aggregates,
the community edition), or nobody. ``resolutions_current_at_commit`` and
``CaggWatermarks``: which resolutions include a tick as soon as its transaction
commits, for ``nexanest_rollup_freshness_seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nexanest.pipeline.edition import Edition, detect_edition
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.sinks.ohlcv import CAGGS, RESOLUTIONS, ROLLUP_TABLES, Resolution, RollupMode, RollupSetting


async def resolve_rollups(conn: Any, setting: RollupSetting) -> RollupMode:
    """Who keeps the bars for this database (``conn``: a connection or pool).

    ``auto`` is ``native`` on the community edition and ``pipeline`` elsewhere.
    Raises ``ConfigurationError`` for a choice the database cannot serve:
    ``native`` without continuous aggregates, ``pipeline`` without the rollup
    tables (not migrated, or migrated as the community edition).
    """
    if setting == "off":
        return "off"
    edition: Edition = await detect_edition(conn)
    mode: RollupMode = ("native" if edition == "timescale" else "pipeline") if setting == "auto" else setting
    if mode == "native" and edition != "timescale":
        raise ConfigurationError(
            "consumer.rollups = native needs continuous aggregates, which this TimescaleDB "
            f"edition ({edition}) does not have; use auto or pipeline"
        )
    if mode == "pipeline" and await conn.fetchval("SELECT to_regclass($1)", ROLLUP_TABLES["1m"]) is None:
        raise ConfigurationError(
            f"consumer.rollups = pipeline needs the {ROLLUP_TABLES['1m']} table: run `nexanest migrate` "
            "(on the community edition the migration builds continuous aggregates instead; use auto or native)"
        )
    return mode


_REALTIME_CAGGS = """
SELECT view_name FROM timescaledb_information.continuous_aggregates
 WHERE view_schema = current_schema() AND view_name = ANY($1::text[]) AND NOT materialized_only
"""


async def resolutions_current_at_commit(conn: Any, mode: RollupMode) -> tuple[Resolution, ...]:
    """The resolutions whose view (``ohlcv_<r>``) can include a tick as soon as its
    transaction commits: those ``nexanest_rollup_freshness_seconds`` is reported
    for, so that it means the same on both editions (now minus the newest
    committed tick the bars include).

    - ``pipeline``: all four (the consumer merges the bars in the tick's transaction).
    - ``native``: the continuous aggregates with real-time aggregation
      (``materialized_only = false`` in the documented view
      ``timescaledb_information.continuous_aggregates``; the migration creates
      them so). A query answers above the materialization watermark from the
      level below, so a tick newer than the watermarks is in the bars at commit
      (``CaggWatermarks`` checks that per batch). A materialized-only aggregate
      shows a tick only after a refresh the consumer does not see: no series.
    - ``off``: none.

    One query, at start; ``conn`` is a connection or pool.
    """
    if mode == "pipeline":
        return RESOLUTIONS
    if mode == "off":
        return ()
    rows = await conn.fetch(_REALTIME_CAGGS, list(CAGGS.values()))
    realtime = {row["view_name"] for row in rows}
    return tuple(r for r in RESOLUTIONS if CAGGS[r] in realtime)


# The watermark of each aggregate, in microseconds since the epoch: the value
# _timescaledb_functions.cagg_watermark() returns (TimescaleDB's documented way
# to see it), read from the catalog table that function reads, because the
# function also wants SELECT on the aggregate itself, which the ingest role
# lacks (it reads the views). An aggregate never refreshed has the minimum time.
_WATERMARKS = """
SELECT c.user_view_name, w.watermark
  FROM _timescaledb_catalog.continuous_agg c
  JOIN _timescaledb_catalog.continuous_aggs_watermark w USING (mat_hypertable_id)
 WHERE c.user_view_schema = current_schema() AND c.user_view_name = ANY($1::text[])
"""


class CaggWatermarks:
    """Which real-time continuous aggregates include a committed tick.

    Below its watermark an aggregate answers from materialized buckets only, so
    a tick committed there shows once the next refresh runs (the policy's
    schedule); above it the real-time part reads the level below. The levels
    are hierarchical (5m over 1m, ...), so a tick is in the bars of ``r`` when
    it is at or above the watermarks of ``r`` and of every level beneath, and
    all of them answer in real time.
    """

    async def covering(self, conn: Any, tick_ns: int, resolutions: Sequence[Resolution]) -> tuple[Resolution, ...]:
        """The ``resolutions`` whose bars include a tick of ``tick_ns`` committed
        before the call: one query (``conn``: a connection or pool). Read after
        the commit, so a watermark that passed the tick meanwhile counts against
        it (the bars may lack it until the next refresh): the answer errs
        towards "not yet"."""
        rows = await conn.fetch(_WATERMARKS, list(CAGGS.values()))
        marks = {row["user_view_name"]: int(row["watermark"]) for row in rows}
        tick_us = tick_ns // 1_000
        covered: list[Resolution] = []
        highest: int | None = None
        for resolution in RESOLUTIONS:  # bottom-up: a level reads the one beneath
            mark = marks.get(CAGGS[resolution])
            if mark is None or resolution not in resolutions:
                break  # no real-time part here: nor in the levels above
            highest = mark if highest is None else max(highest, mark)
            if tick_us < highest:
                break
            covered.append(resolution)
        return tuple(covered)
