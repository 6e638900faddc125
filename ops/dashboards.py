"""The Grafana dashboards of deploy/grafana/dashboards, generated from plain dicts.

``python -m nexanest.ops.dashboards`` rewrites the JSON files; a test
(tests/deploy/test_dashboards.py) regenerates them and compares with what is
committed, then evaluates every PromQL expression through a real Prometheus and
runs every SQL panel against TimescaleDB.

Data sources are referred to by the uids of deploy/grafana/provisioning/datasources:
``prometheus`` and ``timescaledb``. SQL panels use Grafana's macros
(``$__timeFilter(column)``) so that every query is bounded in time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PROMETHEUS_UID = "prometheus"
TIMESCALE_UID = "timescaledb"
DASHBOARDS_DIR = Path(__file__).resolve().parents[1] / "deploy/grafana/dashboards"

Panel = dict[str, Any]


def _grid(index: int, width: int = 12, height: int = 8) -> dict[str, int]:
    per_row = 24 // width
    return {"x": (index % per_row) * width, "y": (index // per_row) * height, "w": width, "h": height}


def timeseries(title: str, unit: str, *targets: tuple[str, str]) -> Panel:
    """A time series panel of PromQL ``targets`` (expression, legend)."""
    return {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID},
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def sql_table(title: str, sql: str) -> Panel:
    """A table panel of one SQL query on TimescaleDB."""
    return {
        "type": "table",
        "title": title,
        "datasource": {"type": "grafana-postgresql-datasource", "uid": TIMESCALE_UID},
        "targets": [
            {
                "refId": "A",
                "datasource": {"type": "grafana-postgresql-datasource", "uid": TIMESCALE_UID},
                "format": "table",
                "rawQuery": True,
                "editorMode": "code",
                "rawSql": sql,
            }
        ],
    }


def dashboard(uid: str, title: str, panels: list[Panel], time_from: str = "now-1h") -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["nexanest"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": [{"id": i + 1, "gridPos": _grid(i), **p} for i, p in enumerate(panels)],
    }


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[5m])))", f"{legend}p{int(q * 100)}")
        for q in (0.5, 0.9, 0.99)
    ]


def pipeline() -> dict[str, Any]:
    return dashboard(
        "nexanest-pipeline",
        "NexaNest / Pipeline overview",
        [
            timeseries(
                "Ticks in and out",
                "ops",
                ("sum by (topic) (rate(nexanest_producer_ticks_total[5m]))", "produced {{topic}}"),
                ("sum by (topic) (rate(nexanest_consumer_messages_total[5m]))", "consumed {{topic}}"),
                ("sum by (sink) (rate(nexanest_sink_rows_written_total[5m]))", "written {{sink}}"),
            ),
            timeseries(
                "Consumer lag (messages)",
                "short",
                ("sum by (topic, partition) (nexanest_consumer_lag_messages)", "{{topic}}/{{partition}}"),
            ),
            timeseries(
                "Consumer lag (seconds)",
                "s",
                ("max by (topic, partition) (nexanest_consumer_lag_seconds)", "{{topic}}/{{partition}}"),
            ),
            timeseries("Tick to quote latency (Redis)", "s", *quantiles("nexanest_quote_latency_seconds")),
            timeseries("Tick to row latency (TimescaleDB)", "s", *quantiles("nexanest_consumer_tick_to_row_seconds")),
            timeseries(
                "Dead letters by reason",
                "ops",
                ("sum by (reason) (rate(nexanest_consumer_rejected_total[5m]))", "{{reason}}"),
            ),
            timeseries(
                "Batch size",
                "short",
                *quantiles("nexanest_consumer_batch_rows"),
                (
                    "sum(rate(nexanest_consumer_batch_rows_sum[5m]))"
                    " / sum(rate(nexanest_consumer_batch_rows_count[5m]))",
                    "mean",
                ),
            ),
            timeseries("Sink flush time", "s", *quantiles("nexanest_sink_flush_seconds", "sink")),
            timeseries(
                "Batch retries by service",
                "ops",
                ("sum by (service) (rate(nexanest_consumer_retries_total[5m]))", "{{service}}"),
            ),
        ],
    )


HYPERTABLES = (
    "('stock_prices', 'market_indices', 'ohlcv_1m_rollup', 'ohlcv_5m_rollup', 'ohlcv_1h_rollup', 'ohlcv_1d_rollup')"
)


#: Retention: per hypertable and age band (of a chunk's newest possible row), the
#: chunks and their bytes, and the horizon that drops them. On the community
#: edition that is the native retention policy (``nexanest maintain`` sets it);
#: on the Apache edition ``nexanest maintain`` drops chunks itself by
#: NEXANEST_RETENTION__* (the database does not know the horizon).
RETENTION_SQL = (
    "WITH sizes AS (\n"
    "  SELECT h.hypertable_name, s.chunk_name, s.total_bytes\n"
    "  FROM timescaledb_information.hypertables h,\n"
    "       LATERAL chunks_detailed_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) s\n"
    f"  WHERE h.hypertable_name IN {HYPERTABLES}\n"
    ")\n"
    "SELECT c.hypertable_name AS hypertable,\n"
    "       CASE WHEN c.range_end > now() - INTERVAL '1 day' THEN 'under 1 day'\n"
    "            WHEN c.range_end > now() - INTERVAL '7 days' THEN '1 to 7 days'\n"
    "            WHEN c.range_end > now() - INTERVAL '30 days' THEN '7 to 30 days'\n"
    "            ELSE 'over 30 days' END AS age,\n"
    "       count(*) AS chunks,\n"
    "       sum(s.total_bytes) AS bytes,\n"
    "       min(c.range_start) AS oldest_from,\n"
    "       coalesce((SELECT j.config ->> 'drop_after' FROM timescaledb_information.jobs j\n"
    "                 WHERE j.proc_name = 'policy_retention' AND j.hypertable_name = c.hypertable_name),\n"
    "                'no policy: nexanest maintain (NEXANEST_RETENTION__*)') AS retention\n"
    "FROM timescaledb_information.chunks c\n"
    "JOIN sizes s ON s.hypertable_name = c.hypertable_name AND s.chunk_name = c.chunk_name\n"
    "GROUP BY c.hypertable_name, 2\n"
    "ORDER BY c.hypertable_name, min(c.range_end) DESC"
)


def storage() -> dict[str, Any]:
    return dashboard(
        "nexanest-storage",
        "NexaNest / Storage",
        [
            timeseries(
                "Rows written by sink",
                "ops",
                ("sum by (sink) (rate(nexanest_sink_rows_written_total[5m]))", "{{sink}}"),
            ),
            timeseries(
                "Rollup freshness", "s", ("max by (resolution) (nexanest_rollup_freshness_seconds)", "{{resolution}}")
            ),
            timeseries(
                "Duplicates skipped and fenced batches",
                "ops",
                ("sum(rate(nexanest_sink_duplicates_skipped_total[5m]))", "duplicates skipped"),
                ("sum(rate(nexanest_consumer_fenced_total[5m]))", "batches fenced"),
            ),
            sql_table(
                "Hypertable sizes and chunks",
                "SELECT h.hypertable_name AS hypertable,\n"
                "       hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) AS bytes,\n"
                "       h.num_chunks AS chunks\n"
                "FROM timescaledb_information.hypertables h\n"
                f"WHERE h.hypertable_name IN {HYPERTABLES}\n"
                "ORDER BY bytes DESC",
            ),
            sql_table(
                "Newest bar per resolution",
                "SELECT '1m' AS resolution, max(bucket) AS newest, now() - max(bucket) AS age\n"
                "FROM ohlcv_1m WHERE $__timeFilter(bucket)\n"
                "UNION ALL SELECT '5m', max(bucket), now() - max(bucket) FROM ohlcv_5m WHERE $__timeFilter(bucket)\n"
                "UNION ALL SELECT '1h', max(bucket), now() - max(bucket) FROM ohlcv_1h WHERE $__timeFilter(bucket)\n"
                "UNION ALL SELECT '1d', max(bucket), now() - max(bucket) FROM ohlcv_1d "
                "WHERE bucket >= $__timeFrom()::timestamptz - INTERVAL '1 day' AND bucket <= $__timeTo()",
            ),
            sql_table("Retention: chunks and bytes by age, and the horizon", RETENTION_SQL),
        ],
    )


def services() -> dict[str, Any]:
    requests = "nexanest_http_requests_total"
    return dashboard(
        "nexanest-services",
        "NexaNest / Services",
        [
            timeseries(
                "Requests by route",
                "reqps",
                (f"sum by (service, route) (rate({requests}[5m]))", "{{service}} {{route}}"),
            ),
            timeseries(
                "5xx ratio",
                "percentunit",
                (
                    f'(sum by (service) (rate({requests}{{status=~"5.."}}[5m]))'
                    f" or sum by (service) (rate({requests}[5m])) * 0)"
                    f" / sum by (service) (rate({requests}[5m]))",
                    "{{service}}",
                ),
            ),
            timeseries(
                "p99 latency by route",
                "s",
                (
                    "histogram_quantile(0.99, sum by (le, service, route) "
                    "(rate(nexanest_http_request_duration_seconds_bucket[5m])))",
                    "{{service}} {{route}}",
                ),
            ),
            timeseries("Targets up", "short", ('up{job=~"services|nexanest"}', "{{job}} {{component}}")),
        ],
    )


def market() -> dict[str, Any]:
    return dashboard(
        "nexanest-market",
        "NexaNest / Market",
        [
            sql_table(
                "Latest 1-minute bars",
                "SELECT DISTINCT ON (symbol) symbol, bucket, open, high, low, close, volume, trade_count, vwap\n"
                "FROM ohlcv_1m\n"
                "WHERE $__timeFilter(bucket)\n"
                "ORDER BY symbol, bucket DESC",
            ),
            sql_table(
                "Latest quotes",
                "SELECT DISTINCT ON (symbol) symbol, time, price, bid, ask, size, exchange\n"
                "FROM stock_prices\n"
                "WHERE $__timeFilter(time)\n"
                "ORDER BY symbol, time DESC",
            ),
            sql_table(
                "Ticks per minute",
                "SELECT time_bucket('1 minute', time) AS time, count(*) AS ticks\n"
                "FROM stock_prices\n"
                "WHERE $__timeFilter(time)\n"
                "GROUP BY 1 ORDER BY 1",
            ),
        ],
        time_from="now-6h",
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard by its file name."""
    return {
        "pipeline.json": pipeline(),
        "storage.json": storage(),
        "services.json": services(),
        "market.json": market(),
    }


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DASHBOARDS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, board in dashboards().items():
        (out / name).write_text(render(board))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
