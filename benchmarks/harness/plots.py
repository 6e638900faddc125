"""PNG plots of the benchmark results (issue 5), for RESULTS.md and the README.

    .venv-bench/bin/python -m benchmarks.harness.plots [FILE.json ...] [--results DIR] [--out DIR] [--update-results]

Reads the newest ``<name>-<YYYYmmddTHHMMSS>.json`` of each benchmark in
``benchmarks/results/`` (a file named on the command line takes the place of
the newest of its benchmark, told by its ``"benchmark"`` key) and writes, into
``benchmarks/results/plots/`` (git-ignored), or with ``--update-results`` into the
committed ``benchmarks/plots/`` that RESULTS.md and the README show:

* ``throughput_by_scenario.png`` (``suite``): ticks/s of every scenario, the
  limits (database, broker, client) and the alternatives (naive INSERT, Quix
  Streams) next to the pipeline, each labelled with its ratio to the pipeline;
* ``latency_by_rate.png`` (``suite``, ``results.freshness``): tick-to-quote
  p50/p99/max by offered rate, with the 50 ms p99 target;
* ``throughput_vs_table_size.png`` (``growth``): ingest rate per slice against
  the rows already in ``stock_prices``, with its chunk count;
* ``scale_out.png`` (``scale_out``): ticks/s by number of consumers, against
  linear scaling from one consumer;
* ``backpressure_rss.png`` (``backpressure``): the consumer's RSS over time
  with the database stall shaded, and the lag.

Each plot is titled with the run (benchmark, run id, start time) and the
command that produced it. A benchmark without results is skipped with a
message; a file that is not the JSON its plot needs is an error naming it
(exit 1). Runs with ``matplotlib`` from ``.venv-bench`` (``make bench-venv``),
Agg backend, standard library otherwise (no project imports), so it works on
results copied from another machine.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the benchmark machines
import matplotlib.pyplot as plt  # the backend is chosen above, before pyplot loads
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

HERE = Path(__file__).resolve().parents[1]
RESULTS_DIR = HERE / "results"
PLOTS_DIR = HERE / "plots"
RESULT_NAME = re.compile(r"^(?P<name>[a-z_]+)-(?P<stamp>\d{8}T\d{6})\.json$")
#: Small files that still read well when GitHub scales them to the page width.
FIGSIZE = (9.0, 5.0)
DPI = 100
P99_TARGET_MS = 50.0
PIPELINE_COLOR = "#d62728"
OTHER_COLOR = "#1f77b4"
LIMIT_COLOR = "#7f7f7f"
THOUSANDS = StrMethodFormatter("{x:,.0f}")


class PlotError(Exception):
    """A result file is not what its plot needs; the message names the file."""


# -- finding and reading results -----------------------------------------------------------------


def newest_results(results_dir: Path) -> dict[str, Path]:
    """The newest result file of each benchmark, by the time stamp in its name."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in results_dir.glob("*.json"):
        m = RESULT_NAME.match(path.name)
        if m is None:
            continue
        name, stamp = m["name"], m["stamp"]
        if name not in newest or stamp > newest[name][0]:
            newest[name] = (stamp, path)
    return {name: path for name, (_, path) in newest.items()}


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlotError(f"{path}: cannot read it as JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise PlotError(f"{path}: a JSON object expected, found {type(doc).__name__}")
    return doc


def field(doc: dict[str, Any], path: Path, *keys: str | int) -> Any:
    """``doc[k1][k2]...``, or a PlotError naming the file and the missing key."""
    node: Any = doc
    for i, key in enumerate(keys):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError) as exc:
            where = "".join(f"[{k!r}]" for k in keys[: i + 1])
            raise PlotError(f"{path}: no {where} (is it a result of this benchmark?)") from exc
    return node


def number(value: Any, path: Path, what: str) -> float | None:
    """A figure that may be null (a failed scenario); anything else is malformed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlotError(f"{path}: {what} is {value!r}, not a number")
    return float(value)


# -- shared look -------------------------------------------------------------------------------------


def new_figure() -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    ax.grid(True, axis="both", alpha=0.3)
    return fig, ax


def title(fig: Figure, ax: Axes, what: str, doc: dict[str, Any], path: Path) -> None:
    run = doc.get("run_id") or path.stem
    started = doc.get("started_at") or "?"
    ax.set_title(what, fontsize=12, loc="left")
    command = textwrap.fill(f"$ {doc.get('command', '?')}", width=130)
    fig.suptitle(
        f"{doc.get('benchmark', path.stem)} · run {run} · {started}\n{command}",
        fontsize=8,
        x=0.01,
        ha="left",
        color="#444444",
    )


def save(fig: Figure, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def _tps(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"


# -- 1. throughput by scenario -------------------------------------------------------------------

#: (label, path under results, kind) in the order shown, top to bottom.
SCENARIOS: Sequence[tuple[str, tuple[str, ...], str]] = (
    ("limit: broker (Kafka ConsumerPerformance)", ("kafka_perf_tool", "ticks_per_s"), "limit"),
    ("limit: client (aiokafka getmany + decode)", ("client_ceiling", "ticks_per_s"), "limit"),
    ("limit: database (binary COPY, pre-encoded)", ("db_ceiling", "copy_preencoded", "ticks_per_s"), "limit"),
    ("limit: database (binary COPY of the rows)", ("db_ceiling", "copy_records", "ticks_per_s"), "limit"),
    ("our pipeline (exactly-once)", ("pipeline", "ticks_per_s"), "pipeline"),
    ("our pipeline, at-least-once", ("pipeline_at_least_once", "ticks_per_s"), "other"),
    ("Quix Streams + PostgreSQLSink", ("quix", "ticks_per_s"), "other"),
    ("naive consumer, INSERT per message", ("naive_insert", "ticks_per_s"), "other"),
)


def plot_throughput(doc: dict[str, Any], path: Path, out_dir: Path) -> Path:
    results = field(doc, path, "results")
    if not isinstance(results, dict):
        raise PlotError(f"{path}: ['results'] is not an object")
    pipeline = number(field(doc, path, "results", "pipeline", "ticks_per_s"), path, "pipeline ticks_per_s")
    rows: list[tuple[str, float | None, str]] = []
    for label, keys, kind in SCENARIOS:
        node: Any = results
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        rows.append((label, number(node, path, ".".join(keys)), kind))
    rows.reverse()  # barh draws bottom-up
    fig, ax = new_figure()
    values = [v or 0.0 for _, v, _ in rows]
    colors = [{"pipeline": PIPELINE_COLOR, "limit": LIMIT_COLOR}.get(kind, OTHER_COLOR) for _, _, kind in rows]
    ax.barh([label for label, _, _ in rows], values, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("ticks/s (log scale)")
    ax.grid(False, axis="y")
    top = max(values) if any(values) else 1.0
    ax.set_xlim(left=min([v for v in values if v] or [1.0]) / 3, right=top * 60)
    for i, (_, value, kind) in enumerate(rows):
        if value is None:
            text = "n/a (failed or skipped)"
            x = ax.get_xlim()[0] * 1.1
        else:
            ratio = "" if kind == "pipeline" or not pipeline else f" · pipeline ÷ this {pipeline / value:.2f}×"
            text = f"{_tps(value)} ticks/s{ratio}"
            x = value * 1.08
        ax.text(x, i, text, va="center", fontsize=8)
    mode = doc.get("mode", "")
    ticks = doc.get("parameters", {}).get("ticks")
    feed = f"{ticks:,} ticks" if isinstance(ticks, int) else ""
    title(fig, ax, f"Throughput by scenario ({mode}, {feed}, one run)", doc, path)
    return save(fig, out_dir / "throughput_by_scenario.png")


# -- 2. latency percentiles by rate -----------------------------------------------------------------


def plot_latency(doc: dict[str, Any], path: Path, out_dir: Path) -> Path | str:
    fresh = field(doc, path, "results", "freshness")
    if not isinstance(fresh, list):
        raise PlotError(f"{path}: ['results']['freshness'] is not a list")
    points = []
    for i, f in enumerate(fresh):
        if f is None:
            continue  # a failed rate
        offered, p50, p99, worst = (
            number(field(doc, path, "results", "freshness", i, key), path, f"freshness[{i}].{key}")
            for key in ("offered_ticks_per_s", "p50_ms", "p99_ms", "max_ms")
        )
        achieved = number(f.get("achieved_ticks_per_s"), path, f"freshness[{i}].achieved_ticks_per_s")
        points.append((offered, p50, p99, worst, achieved))
    if not points:
        return f"{path.name}: no freshness run succeeded; latency_by_rate.png not written"
    points.sort()
    fig, ax = new_figure()
    xs = [p[0] or 0.0 for p in points]
    for col, label, style in ((3, "max", ":"), (2, "p99", "-"), (1, "p50", "--")):
        ax.plot(xs, [p[col] for p in points], style, marker="o", label=label)
    ax.axhline(P99_TARGET_MS, color=PIPELINE_COLOR, linewidth=1.2, label=f"p99 target {P99_TARGET_MS:g} ms")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:,.0f}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("offered ticks/s (producer in its own process)")
    ax.set_ylabel("tick time to quote in Redis, ms (log scale)")
    for offered, _, p99, _, achieved in points:
        if achieved is not None and offered and achieved < 0.95 * offered:
            ax.annotate(
                f"achieved only {achieved:,.0f}/s",
                (offered, p99 or P99_TARGET_MS),
                textcoords="offset points",
                xytext=(-40, -16),
                fontsize=8,
            )
    ax.legend(fontsize=8)
    title(fig, ax, "Latency percentiles by offered rate (tick to quote)", doc, path)
    return save(fig, out_dir / "latency_by_rate.png")


# -- 3. throughput vs table size -----------------------------------------------------------------------


def plot_growth(doc: dict[str, Any], path: Path, out_dir: Path) -> Path | str:
    slices = field(doc, path, "slices")
    if not isinstance(slices, list):
        raise PlotError(f"{path}: ['slices'] is not a list")
    if not slices:
        return f"{path.name}: no slices; throughput_vs_table_size.png not written"

    def column(key: str, *, required: bool = True) -> list[float | None]:
        return [
            number(
                field(doc, path, "slices", i, key) if required else s.get(key) if isinstance(s, dict) else None,
                path,
                f"slices[{i}].{key}",
            )
            for i, s in enumerate(slices)
        ]

    rows, tps, chunks = column("rows_in_table"), column("ticks_per_s"), column("chunks")
    db_tps = column("db_ticks_per_s", required=False)
    xs = [(r or 0.0) / 1e6 for r in rows]
    fig, ax = new_figure()
    ax.plot(
        xs, tps, marker="o", color=PIPELINE_COLOR, label="ticks/s (the consumer's write: COPY, bars, offsets, quotes)"
    )
    if any(v is not None for v in db_tps):
        ax.plot(xs, db_tps, "--", marker=".", color=OTHER_COLOR, label="ticks/s without the Redis quote flush")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("rows in stock_prices (millions)")
    ax.set_ylabel("ticks/s")
    ax.yaxis.set_major_formatter(THOUSANDS)
    right = ax.twinx()
    right.step(xs, chunks, where="post", color=LIMIT_COLOR, alpha=0.6, label="chunks")
    right.set_ylabel("chunks", color=LIMIT_COLOR)
    right.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower center")
    ratio = doc.get("ratio_last_vs_first")
    shown = f"; last ÷ first slices {ratio:.2f}" if isinstance(ratio, int | float) else ""
    title(fig, ax, f"Ingest rate as the table grows{shown}", doc, path)
    return save(fig, out_dir / "throughput_vs_table_size.png")


# -- 4. scale-out ---------------------------------------------------------------------------------------


def plot_scale_out(doc: dict[str, Any], path: Path, out_dir: Path) -> Path | str:
    runs = field(doc, path, "runs")
    if not isinstance(runs, list):
        raise PlotError(f"{path}: ['runs'] is not a list")
    points = []
    for i in range(len(runs)):
        n = number(field(doc, path, "runs", i, "consumers"), path, f"runs[{i}].consumers")
        tps = number(field(doc, path, "runs", i, "ticks_per_s"), path, f"runs[{i}].ticks_per_s")
        if n is not None and tps is not None:
            points.append((n, tps))
    if not points:
        return f"{path.name}: no run with a rate; scale_out.png not written"
    points.sort()
    fig, ax = new_figure()
    xs = [n for n, _ in points]
    ax.bar(xs, [t for _, t in points], width=0.6, color=PIPELINE_COLOR, label="measured ticks/s")
    one = next((t for n, t in points if n == 1), None)
    if one is not None:
        ax.plot(xs, [one * n for n in xs], "--", color=LIMIT_COLOR, label="linear from one consumer")
    for n, t in points:
        share = f"\n{t / one:.2f}× of one" if one else ""
        ax.text(n, t, f"{_tps(t)}{share}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [f"{n:g}" for n in xs])
    ax.set_xlabel("consumers in the group")
    ax.set_ylabel("ticks/s")
    ax.yaxis.set_major_formatter(THOUSANDS)
    ax.set_ylim(0, max([t for _, t in points] + [one * max(xs) if one else 0.0]) * 1.2)
    ax.legend(fontsize=8, loc="upper left")
    cores = doc.get("machine", {}).get("cores")
    on = f" on {cores} cores" if cores else ""
    title(fig, ax, f"Scale-out: one consumer group, more consumers{on}", doc, path)
    return save(fig, out_dir / "scale_out.png")


# -- 5. backpressure: RSS over time ---------------------------------------------------------------------


def _series(doc: dict[str, Any], path: Path, key: str) -> tuple[list[float], list[float]]:
    points = field(doc, path, key)
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise PlotError(f"{path}: [{key!r}] is not a list of [t_s, value] pairs")
    xs = [number(p[0], path, f"{key} time") or 0.0 for p in points]
    ys = [number(p[1], path, f"{key} value") or 0.0 for p in points]
    return xs, ys


def plot_backpressure(doc: dict[str, Any], path: Path, out_dir: Path) -> Path:
    ts, rss = _series(doc, path, "samples")
    start = number(field(doc, path, "stall", "from_s"), path, "stall.from_s") or 0.0
    end = number(field(doc, path, "stall", "to_s"), path, "stall.to_s") or 0.0
    figures = field(doc, path, "rss_mb")
    fig, ax = new_figure()
    ax.axvspan(start, end, color="#ffbf00", alpha=0.25, label=f"database stalled ({end - start:.0f} s)")
    ax.plot(ts, rss, color=PIPELINE_COLOR, linewidth=1.2, label="consumer RSS (MB)")
    steady = number(figures.get("steady_before"), path, "rss_mb.steady_before")
    if steady is not None:
        ax.axhline(steady, color=PIPELINE_COLOR, linestyle=":", linewidth=1, label=f"steady before: {steady:.0f} MB")
    ax.set_xlabel("seconds since the consumer started")
    ax.set_ylabel("RSS, MB")
    ax.set_ylim(0, max([*rss, 1.0]) * 1.25)
    handles, labels = ax.get_legend_handles_labels()
    if "lag_samples" in doc:
        lag_t, lag = _series(doc, path, "lag_samples")
        right = ax.twinx()
        right.plot(lag_t, [v / 1000 for v in lag], color=OTHER_COLOR, alpha=0.7, linewidth=1, label="lag (k messages)")
        right.set_ylabel("lag, thousands of messages", color=OTHER_COLOR)
        right.set_ylim(bottom=0)
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=8, loc="lower right")
    peak = number(figures.get("peak"), path, "rss_mb.peak")
    during = number(figures.get("max_during_stall"), path, "rss_mb.max_during_stall")
    verdict = {True: "bounded", False: "NOT bounded"}.get(doc.get("bounded") is True, "?")
    stats = f"max during stall {during:.0f} MB, peak {peak:.0f} MB" if during and peak else ""
    title(fig, ax, f"Consumer memory while the database stalls: {verdict} ({stats})", doc, path)
    return save(fig, out_dir / "backpressure_rss.png")


# -- entry point ---------------------------------------------------------------------------------------

Plotter = Callable[[dict[str, Any], Path, Path], "Path | str"]
#: Which benchmark feeds which plots, in the order they are written.
PLOTS: Sequence[tuple[str, str, Plotter]] = (
    ("suite", "throughput_by_scenario.png", plot_throughput),
    ("suite", "latency_by_rate.png", plot_latency),
    ("growth", "throughput_vs_table_size.png", plot_growth),
    ("scale_out", "scale_out.png", plot_scale_out),
    ("backpressure", "backpressure_rss.png", plot_backpressure),
)


def inputs(files: Sequence[Path], results_dir: Path) -> dict[str, Path]:
    """The newest result of each benchmark, overridden by the files given."""
    chosen = newest_results(results_dir) if results_dir.is_dir() else {}
    for path in files:
        name = load(path).get("benchmark")
        if not isinstance(name, str):
            raise PlotError(f"{path}: no 'benchmark' key, so which plot it is for is unknown")
        chosen[name] = path
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="result JSON files to use instead of the newest ones")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help=f"where to look (default {RESULTS_DIR})")
    parser.add_argument("--out", type=Path, help=f"where the PNGs go (default {RESULTS_DIR / 'plots'})")
    parser.add_argument("--update-results", action="store_true", help=f"write the committed plots in {PLOTS_DIR}")
    args = parser.parse_args(argv)
    args.out = args.out or (PLOTS_DIR if args.update_results else RESULTS_DIR / "plots")
    written: list[Path] = []
    try:
        chosen = inputs(args.files, args.results)
        docs = {name: load(path) for name, path in chosen.items()}
        for name, png, plot in PLOTS:
            path = chosen.get(name)
            if path is None:
                print(f"skipped {png}: no {name}-*.json in {args.results} and none given", file=sys.stderr)
                continue
            outcome = plot(docs[name], path, args.out)
            if isinstance(outcome, Path):
                written.append(outcome)
                print(f"{outcome} <- {path}", file=sys.stderr)
            else:
                print(f"skipped {png}: {outcome}", file=sys.stderr)
    except PlotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
