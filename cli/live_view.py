"""A one-line terminal view of a running pipeline, read from the metrics registry.

It reads the same counters Prometheus scrapes, so what the terminal shows and
what a dashboard shows cannot disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from nexanest.pipeline.metrics import REGISTRY


def _total(metric: str, **labels: str) -> float:
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    produced: float
    consumed: float
    written: float
    rejected: float
    lag: float

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            at=time.monotonic(),
            produced=_total("nexanest_producer_ticks_total"),
            consumed=_total("nexanest_consumer_messages_total"),
            written=_total("nexanest_sink_rows_written_total", sink="timescale"),
            rejected=_total("nexanest_consumer_rejected_total"),
            lag=_total("nexanest_consumer_lag_messages"),
        )


def render(prev: Snapshot, now: Snapshot) -> str:
    dt = max(now.at - prev.at, 1e-9)
    return (
        f"in {(now.produced - prev.produced) / dt:>9,.0f}/s  "
        f"out {(now.written - prev.written) / dt:>9,.0f}/s  "
        f"rows written {now.written:>12,.0f}  "
        f"dead-lettered {now.rejected:>7,.0f}  "
        f"lag {now.lag:>8,.0f}"
    )


async def show(stop: asyncio.Event, interval_s: float = 1.0, out: TextIO = sys.stdout) -> None:
    """Redraw the line every ``interval_s`` until ``stop``; plain lines when not a tty."""
    tty = out.isatty()
    prev = Snapshot.take()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        now = Snapshot.take()
        line = render(prev, now)
        out.write(f"\r\x1b[2K{line}" if tty else f"{line}\n")
        out.flush()
        prev = now
    if tty:
        out.write("\n")
