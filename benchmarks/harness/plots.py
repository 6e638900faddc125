"""PNG plots of the newest results of each scenario (``benchmarks/results/<name>-<time>.json``).

    .venv-bench/bin/python -m benchmarks.harness.plots [FILE.json ...] [--update-results]

Into ``benchmarks/results/plots/`` (git-ignored), with ``--update-results`` into
the committed ``benchmarks/plots/``. Needs matplotlib (``.venv-bench``) and
nothing of the project, so it works on results copied from another machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the benchmark machines
import matplotlib.pyplot as plt  # the backend is chosen above, before pyplot loads
from matplotlib.axes import Axes
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^(?P<name>[a-z_0-9]+)-(?P<stamp>\d{8}T\d{6})\.json$")
RED, BLUE, GREY = "#d62728", "#1f77b4", "#7f7f7f"


def figure(doc: dict[str, Any], what: str) -> tuple[Figure, Axes]:
    """A figure titled with what it shows, the run and the command that produced it."""
    fig, ax = plt.subplots(figsize=(9.0, 5.0), dpi=100)
    ax.grid(True, alpha=0.3)
    ax.set_title(what, fontsize=12, loc="left")
    command = textwrap.fill(f"$ {doc.get('command', '?')}", width=130)
    run = f"{doc.get('benchmark')} · run {doc.get('run_id')} · {doc.get('started_at')}"
    fig.suptitle(f"{run}\n{command}", fontsize=8, x=0.01, ha="left", color="#444444")
    return fig, ax


def k(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"


def throughput(doc: dict[str, Any]) -> Figure:
    r = doc["results"]
    bars = [  # bottom to top: barh draws upwards
        ("naive consumer, INSERT per message", r.get("naive_insert"), BLUE),
        ("Quix Streams + PostgreSQLSink", r.get("quix"), BLUE),
        ("our pipeline, at-least-once", r.get("pipeline_at_least_once"), BLUE),
        ("our pipeline in one process (exactly-once)", r.get("pipeline"), RED),
        ("`nexanest consume`, one process", r.get("consume_one"), RED),
        ("`nexanest consume`, by default", r.get("consume_default"), RED),
        ("limit: database (binary COPY of the rows)", (r.get("db_ceiling") or {}).get("copy_records"), GREY),
        ("limit: database (binary COPY, pre-encoded)", (r.get("db_ceiling") or {}).get("copy_preencoded"), GREY),
        ("limit: database (COPY, one index)", (r.get("db_ceiling") or {}).get("copy_one_index"), GREY),
        ("limit: client (aiokafka getmany + decode)", r.get("client_ceiling"), GREY),
        ("limit: broker (Kafka ConsumerPerformance)", r.get("kafka_perf_tool"), GREY),
    ]
    values = [(node or {}).get("ticks_per_s") or 0.0 for _, node, _ in bars]
    pipe = (r.get("pipeline") or {}).get("ticks_per_s")
    fig, ax = figure(doc, f"Throughput by scenario ({doc['mode']}, {doc['parameters']['ticks']:,} ticks, one run)")
    ax.barh([label for label, _, _ in bars], values, color=[color for *_, color in bars])
    low = min([v for v in values if v] or [1.0]) / 3
    ax.set(xscale="log", xlabel="ticks/s (log scale)", xlim=(low, max(values) * 60))
    for i, v in enumerate(values):
        share = f" · pipeline ÷ this {pipe / v:.2f}×" if v and pipe and v != pipe else ""
        ax.text(v * 1.08 or low * 1.1, i, f"{k(v)} ticks/s{share}" if v else "n/a", va="center", fontsize=8)
    return fig


def latency(doc: dict[str, Any]) -> Figure | None:
    points = sorted((f["offered_ticks_per_s"], f) for f in doc["results"].get("freshness") or [] if f)
    if not points:
        return None
    fig, ax = figure(doc, "Latency percentiles by offered rate (tick to quote)")
    xs = [x for x, _ in points]
    for key, style in (("max_ms", ":"), ("p99_ms", "-"), ("p50_ms", "--")):
        ax.plot(xs, [f[key] for _, f in points], style, marker="o", label=key.removesuffix("_ms"))
    ax.plot([5000, 20000], [20.0, 50.0], "s", color=RED, label="p99 targets (20 ms at 5k/s, 50 ms at 20k/s)")
    ax.set(xscale="log", yscale="log", xlabel="offered ticks/s (the feed in its own process)")
    ax.set_ylabel("tick's own timestamp to its quote update, ms (log scale)")
    ax.set_xticks(xs, [f"{x:,.0f}" for x in xs])
    ax.minorticks_off()
    for x, f in points:
        if f["achieved_ticks_per_s"] < 0.95 * x:
            ax.annotate(f"achieved only {f['achieved_ticks_per_s']:,.0f}/s", (x, f["p99_ms"]), fontsize=8)
    ax.legend(fontsize=8)
    return fig


def growth(doc: dict[str, Any]) -> Figure:
    s = doc["slices"]
    fig, ax = figure(doc, f"Ingest rate as the table grows; last ÷ first slices {doc['ratio_last_vs_first']:.2f}")
    xs = [x["rows_in_table"] / 1e6 for x in s]
    ax.plot(xs, [x["ticks_per_s"] for x in s], marker="o", color=RED, label="ticks/s (COPY, bars, offsets, quotes)")
    ax.set(ylim=(0, None), xlabel="rows in stock_prices (millions)", ylabel="ticks/s")
    right = ax.twinx()
    right.step(xs, [x["chunks"] for x in s], where="post", color=GREY, alpha=0.6, label="chunks")
    right.set(ylim=(0, None), ylabel="chunks")
    fig.legend(fontsize=8, loc="lower center")
    return fig


def scale_out(doc: dict[str, Any]) -> Figure:
    points = sorted((r["consumers"], r["ticks_per_s"]) for r in doc["runs"] if r.get("ticks_per_s"))
    one = dict(points).get(1)
    fig, ax = figure(doc, f"Scale-out: one consumer group, more consumers on {doc['machine']['cores']} cores")
    ax.bar([c for c, _ in points], [t for _, t in points], width=0.6, color=RED, label="measured ticks/s")
    if one:
        xs = [c for c, _ in points]
        ax.plot(xs, [one * c for c in xs], "--", color=GREY, label="linear from one consumer")
    for c, t in points:
        ax.text(c, t, k(t) + (f"\n{t / one:.2f}× of one" if one else ""), ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="consumers in the group", ylabel="ticks/s")
    ax.set_xticks([c for c, _ in points])
    ax.legend(fontsize=8, loc="upper left")
    return fig


def backpressure(doc: dict[str, Any]) -> Figure:
    s, r = doc["stall"], doc["rss_mb"]
    verdict = "bounded" if doc["bounded"] else "NOT bounded"
    what = f"max during stall {r['max_during_stall']:.0f} MB, peak {r['peak']:.0f} MB"
    fig, ax = figure(doc, f"Consumer memory while the database stalls: {verdict} ({what})")
    stalled = f"database stalled ({s['to_s'] - s['from_s']:.0f} s)"
    ax.axvspan(s["from_s"], s["to_s"], color="#ffbf00", alpha=0.25, label=stalled)
    ax.plot(*zip(*doc["samples"], strict=True), color=RED, linewidth=1.2, label="consumer RSS (MB)")
    ax.axhline(r["steady_before"], color=RED, linestyle=":", label=f"steady before: {r['steady_before']:.0f} MB")
    ax.set(xlabel="seconds since the consumer started", ylabel="RSS, MB", ylim=(0, r["peak"] * 1.25))
    right = ax.twinx()
    lag_t, lag = zip(*doc["lag_samples"], strict=True)
    right.plot(lag_t, [v / 1000 for v in lag], color=BLUE, alpha=0.7, linewidth=1, label="lag (k messages)")
    right.set(ylabel="lag, thousands of messages", ylim=(0, None))
    fig.legend(fontsize=8, loc="lower right")
    return fig


PLOTS: list[tuple[str, str, Callable[[dict[str, Any]], Figure | None]]] = [
    ("suite", "throughput_by_scenario.png", throughput),
    ("suite", "latency_by_rate.png", latency),
    ("growth", "throughput_vs_table_size.png", growth),
    ("scale_out", "scale_out.png", scale_out),
    ("backpressure", "backpressure_rss.png", backpressure),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="result JSON files to use instead of the newest ones")
    parser.add_argument("--update-results", action="store_true", help=f"write the committed plots in {HERE / 'plots'}")
    args = parser.parse_args()
    out = HERE / "plots" if args.update_results else HERE / "results" / "plots"
    newest: dict[str, Path] = {}
    for path in sorted((HERE / "results").glob("*.json"), key=lambda p: p.name[-20:]):
        if m := NAME.match(path.name):
            newest[m["name"]] = path
    newest |= {json.loads(p.read_text())["benchmark"]: p for p in args.files}
    for name, png, plot in PLOTS:
        if name not in newest:
            print(f"skipped {png}: no {name}-*.json in benchmarks/results and none given", file=sys.stderr)
            continue
        try:
            fig = plot(json.loads(newest[name].read_text()))
        except (KeyError, TypeError, ValueError) as exc:  # a result of another shape, or a failed run
            print(f"skipped {png}: {newest[name]} lacks what it needs ({exc!r})", file=sys.stderr)
            continue
        if fig is not None:
            out.mkdir(parents=True, exist_ok=True)
            fig.tight_layout()
            fig.savefig(out / png)
            plt.close(fig)
            print(f"{out / png} <- {newest[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
