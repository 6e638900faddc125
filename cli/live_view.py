"""The live view of a running pipeline, read from the metrics registry.

It reads the same counters Prometheus scrapes, so what the terminal shows and
what a dashboard shows cannot disagree. In a terminal it is one table redrawn
in place (rich's ``Live``): rates in and out, rows written, dead-lettered, lag,
tick-to-quote latency and the latest quotes of a few symbols from Redis.
Elsewhere (a log file, CI) it prints one plain line per interval, which greps
and diffs well.

The measuring and rendering are pure functions of two ``Snapshot``s (and the
quotes), so they are tested without a pipeline or a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nexanest.pipeline.metrics import REGISTRY

LATENCY_METRIC = "nexanest_quote_latency_seconds"

#: (symbol, quote hash as Redis holds it; empty when the symbol has none yet)
Quote = tuple[str, dict[str, str]]
QuoteReader = Callable[[], Awaitable[Sequence[Quote]]]


def total(metric: str, **labels: str) -> float:
    """The sum of ``metric`` over every label set that matches ``labels``."""
    found = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


def _latency_buckets() -> tuple[tuple[float, float], ...]:
    """The latency histogram's cumulative counts as (upper bound in s, count), ascending."""
    buckets = [
        (float(sample.labels["le"]), sample.value)
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == LATENCY_METRIC + "_bucket"
    ]
    return tuple(sorted(buckets))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counters at one moment; ``latency_buckets`` as ``_latency_buckets`` gives them."""

    at: float
    produced: float
    consumed: float
    written: float
    rejected: float
    lag: float
    latency_count: float = 0.0
    latency_sum_s: float = 0.0
    latency_buckets: tuple[tuple[float, float], ...] = ()

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            at=time.monotonic(),
            produced=total("nexanest_producer_ticks_total"),
            consumed=total("nexanest_consumer_messages_total"),
            written=total("nexanest_sink_rows_written_total", sink="timescale"),
            rejected=total("nexanest_consumer_rejected_total"),
            lag=total("nexanest_consumer_lag_messages"),
            latency_count=total(LATENCY_METRIC + "_count"),
            latency_sum_s=total(LATENCY_METRIC + "_sum"),
            latency_buckets=_latency_buckets(),
        )


@dataclass(frozen=True, slots=True)
class Reading:
    """What happened between two snapshots. Latencies are None when no quote was
    published in the interval; ``latency_p99_s`` is the histogram bucket bound
    that 99% of the interval's observations stay under (``inf`` past the last)."""

    in_per_s: float
    out_per_s: float
    written: float
    rejected: float
    lag: float
    latency_mean_s: float | None
    latency_p99_s: float | None


def measure(prev: Snapshot, now: Snapshot) -> Reading:
    dt = max(now.at - prev.at, 1e-9)
    observed = now.latency_count - prev.latency_count
    mean = p99 = None
    if observed > 0:
        mean = (now.latency_sum_s - prev.latency_sum_s) / observed
        before = dict(prev.latency_buckets)
        p99 = math.inf
        for bound, count in now.latency_buckets:
            if count - before.get(bound, 0.0) >= 0.99 * observed:
                p99 = bound
                break
    return Reading(
        in_per_s=(now.produced - prev.produced) / dt,
        out_per_s=(now.written - prev.written) / dt,
        written=now.written,
        rejected=now.rejected,
        lag=now.lag,
        latency_mean_s=mean,
        latency_p99_s=p99,
    )


def render(prev: Snapshot, now: Snapshot) -> str:
    """The plain line printed per interval when the output is not a terminal."""
    r = measure(prev, now)
    return (
        f"in {r.in_per_s:>9,.0f}/s  "
        f"out {r.out_per_s:>9,.0f}/s  "
        f"rows written {r.written:>12,.0f}  "
        f"dead-lettered {r.rejected:>7,.0f}  "
        f"lag {r.lag:>8,.0f}"
    )


def _ms(seconds: float | None, *, bound: bool = False) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "> 30 s" if bound else "-"
    return f"{'<= ' if bound else ''}{seconds * 1e3:,.1f} ms"


def _age(quote: dict[str, str], now_ns: int) -> str:
    try:
        return f"{(now_ns - int(quote['ts_ns'])) / 1e9:,.2f} s"
    except (KeyError, ValueError):
        return "-"


def render_table(reading: Reading, quotes: Sequence[Quote] | None, now_ns: int) -> Group:
    """The terminal view: a table of the pipeline's numbers and one of the quotes.
    ``quotes`` None means Redis could not be read this interval."""
    stats = Table(title="nexanest run", title_justify="left", show_header=False, box=None, padding=(0, 2))
    stats.add_column(style="bold")
    stats.add_column(justify="right")
    stats.add_row("in", f"{reading.in_per_s:,.0f} ticks/s")
    stats.add_row("out", f"{reading.out_per_s:,.0f} rows/s")
    stats.add_row("rows written", f"{reading.written:,.0f}")
    stats.add_row("dead-lettered", f"{reading.rejected:,.0f}")
    stats.add_row("lag", f"{reading.lag:,.0f} messages")
    stats.add_row("tick to quote", f"mean {_ms(reading.latency_mean_s)}  p99 {_ms(reading.latency_p99_s, bound=True)}")
    if quotes is None:
        return Group(stats, Text("quotes: Redis unavailable"))
    table = Table(title="latest quotes", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("symbol", "price", "bid", "ask", "size", "exchange", "age"):
        table.add_column(name, justify="left" if name in ("symbol", "exchange") else "right")
    for symbol, quote in quotes:
        fields = [quote.get(k, "-") for k in ("price", "bid", "ask", "size", "exchange")]
        table.add_row(symbol, *fields, _age(quote, now_ns) if quote else "-")
    return Group(stats, table)


def as_text(renderable: Group, width: int = 100) -> str:
    """What ``renderable`` looks like on a terminal ``width`` columns wide, without colour."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(renderable)
    return buffer.getvalue()


async def _read_quotes(read: QuoteReader | None) -> Sequence[Quote] | None:
    if read is None:
        return ()
    try:
        return await read()
    except Exception:  # noqa: BLE001 - a view must never stop the pipeline it shows; it says so instead
        return None


async def show(
    stop: asyncio.Event,
    interval_s: float = 1.0,
    out: TextIO = sys.stdout,
    quotes: QuoteReader | None = None,
) -> None:
    """Redraw the view every ``interval_s`` until ``stop`` is set; returns then.

    On a terminal the table is drawn at once, redrawn in place and left on screen
    at the end; otherwise one ``render`` line per interval is written (``quotes``
    unread). ``quotes`` failing shows as "Redis unavailable", never raises."""
    tty = out.isatty()
    prev = Snapshot.take()
    live = Live(console=Console(file=out), auto_refresh=False, redirect_stdout=False) if tty else None
    with live if live is not None else contextlib.nullcontext():
        if live is not None:  # the first frame at once, not after a blank interval
            live.update(render_table(measure(prev, prev), await _read_quotes(quotes), time.time_ns()), refresh=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            now = Snapshot.take()
            if live is not None:
                view = render_table(measure(prev, now), await _read_quotes(quotes), time.time_ns())
                live.update(view, refresh=True)
            else:
                out.write(render(prev, now) + "\n")
                out.flush()
            prev = now
