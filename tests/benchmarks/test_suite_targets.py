"""The suite's Targets table judges each figure against its bound, and says n/a (with the reason)
where a figure is missing or was measured at a rate the feed did not reach: a benchmark that
reported "met" for a missing figure, or judged a latency at half the offered rate, would mislead."""

from __future__ import annotations

from typing import Any

from benchmarks.scenarios.suite import markdown, targets


def results(default_tps: float, achieved_20k: float) -> dict[str, Any]:
    fresh = [
        {"offered_ticks_per_s": 5000, "achieved_ticks_per_s": 5000.0, "p99_ms": 12.0},
        {"offered_ticks_per_s": 20000, "achieved_ticks_per_s": achieved_20k, "p99_ms": 80.0},
    ]
    return {
        "db_ceiling": {"copy_one_index": {"ticks_per_s": 180_000.0}},
        "consume_default": {"ticks_per_s": default_tps, "first_row_s": 0.8, "peak_rss_mb": 130.0},
        "consume_one": {"ticks_per_s": 61_000.0, "env": ""},
        "freshness": fresh,
    }


GROWTH = {
    "run_id": "g0123abcd",
    "parameters": {"rows": 10_000_000},
    "queries": {"latest_1000_bounded": {"wall_ms": 21.5}, "bars_1m_day": {"wall_ms": 12.0}},
}
RATIOS = {"pipeline_vs_ceiling": 0.7, "pipeline_vs_quix": None, "pipeline_vs_naive": 25.0}


def by_start(rows: list[dict[str, Any]], start: str) -> dict[str, Any]:
    return next(r for r in rows if r["target"].startswith(start))


def test_each_target_is_met_missed_or_not_judged() -> None:
    checks = [{"ok": True}, {"ok": True}, {"ok": False}]
    rows = targets(results(default_tps=95_000.0, achieved_20k=15_000.0), RATIOS, checks, GROWTH)
    met = {r["target"].split(",")[0]: r["met"] for r in rows}
    assert met["end to end"] is False  # 95k < 100k
    assert by_start(rows, "the same ÷")["value"] == 95_000 / 180_000
    assert by_start(rows, "the same ÷")["met"] is True
    assert met["one consumer process"] is True
    assert met["p99 tick-to-quote at 5"] is True
    at_20k = by_start(rows, "p99 tick-to-quote at 20")
    assert (at_20k["value"], at_20k["met"]) == (None, None)  # the feed reached only 75% of 20k
    assert "15,000/s" in at_20k["note"]
    assert met["first stored row after starting `nexanest consume` on a backlog"] is True
    assert met["latest 1"] is False
    assert met["a day of 1-minute bars"] is True
    assert "g0123abcd" in by_start(rows, "latest 1")["note"]
    assert by_start(rows, "exactly-once")["met"] is False  # one count check failed
    assert by_start(rows, "issue 5: pipeline ÷ Quix")["met"] is None  # skipped scenario: n/a, not met


def test_markdown_renders_the_verdicts_and_no_growth_run_as_na() -> None:
    r = results(default_tps=120_000.0, achieved_20k=20_000.0)
    rows = targets(r, RATIOS, [{"ok": True}], None)
    assert by_start(rows, "end to end")["met"] is True
    assert by_start(rows, "p99 tick-to-quote at 20")["met"] is False  # 80 ms > 50 ms, at the rate offered
    assert by_start(rows, "latest 1")["note"] == "no growth run"
    result = {
        "results": {"freshness": []},  # the scenario rows render n/a; the verdicts come from ``targets``
        "parameters": {"ticks": 1000, "symbols": 3, "seed": 1, "partitions": 6, "batch_max_rows": 100},
        "ratios": RATIOS,
        "targets": rows,
        "checks": [{"ok": True}],
        "started_at": "2026-12-01T00:00:00+00:00",
        "run_id": "s0",
        "command": "suite",
        "duration_s": 1.0,
        "mode": "quick",
        "machine": {
            "cores": 2,
            "cpu": "x",
            "memory_gib": 1,
            "python": "3.11",
            "kafka": "4.4",
            "postgresql": "15",
            "timescaledb": "2.19",
            "timescaledb_license": "apache",
            "synchronous_commit": "on",
            "shared_buffers": "512MB",
            "redis": "7",
            "load_avg_at_start": (0.1, 0.1, 0.1),
            "load_avg_at_end": (0.1, 0.1, 0.1),
        },
    }
    section = markdown(result)
    assert (
        "| end to end, `nexanest consume` as it runs by default, ticks/s | 120,000 | >= 100,000 | **met** |" in section
    )
    assert "| a day of 1-minute bars, ms | n/a | <= 30 | n/a | no growth run |" in section
