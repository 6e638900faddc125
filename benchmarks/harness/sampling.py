"""Sampling a process from ``/proc`` while it runs, and the statistics of the samples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexanest.pipeline import metrics

ROOT = Path(__file__).resolve().parents[2]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB (empty once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@dataclass
class Sampled:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_kb: int
    rss_kb: list[tuple[float, int]]


async def run_sampled(
    argv: Sequence[str], env: Mapping[str, str], timeout_s: float, interval_s: float = 0.05
) -> Sampled:
    """Run a subprocess to completion, sampling its RSS meanwhile; kill it (by
    its own pid) and raise ``TimeoutError`` if it outlives ``timeout_s``."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, env=dict(env), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    done = asyncio.ensure_future(proc.communicate())
    samples: list[tuple[float, int]] = []
    peak = 0
    while not done.done():
        status = proc_status(proc.pid)
        if "VmRSS" in status:
            samples.append((time.monotonic() - started, status["VmRSS"]))
            peak = max(peak, status.get("VmHWM", 0), status["VmRSS"])
        await asyncio.wait({done}, timeout=interval_s)
        if time.monotonic() - started > timeout_s and not done.done():
            proc.kill()
            await done
            raise TimeoutError(f"{argv[0]} {' '.join(argv[1:3])} ran over {timeout_s:.0f}s and was killed")
    stdout, stderr = done.result()
    wall_s = time.monotonic() - started
    return Sampled(
        proc.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace"), wall_s, peak, samples
    )


def rate(rows: float, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def downsample(points: Sequence[tuple[float, float]], limit: int = 2_000) -> list[list[float]]:
    """At most ``limit`` points; each the last time and the max value of its
    bucket, so a short spike survives the thinning."""
    if len(points) <= limit:
        return [[round(t, 3), round(v, 2)] for t, v in points]
    size = -(-len(points) // limit)
    out = []
    for i in range(0, len(points), size):
        bucket = points[i : i + size]
        out.append([round(bucket[-1][0], 3), round(max(v for _, v in bucket), 2)])
    return out


class FlushTimes:
    """Every ``nexanest_sink_flush_seconds`` observation of the named sinks, as the
    sinks make them (the histogram keeps only bucket counts)."""

    def __init__(self, *sinks: str) -> None:
        self.seconds: dict[str, list[float]] = {s: [] for s in sinks}
        self._children = [(metrics.FLUSH_SECONDS.labels(s), self.seconds[s]) for s in sinks]

    def __enter__(self) -> FlushTimes:
        for child, values in self._children:
            observe = child.observe

            def record(amount: float, exemplar: Any = None, *, _v: list[float] = values, _o: Any = observe) -> None:
                _v.append(amount)
                _o(amount, exemplar)

            child.observe = record  # type: ignore[method-assign]  # an instance attribute, deleted on exit
        return self

    def __exit__(self, *_: object) -> None:
        for child, _values in self._children:
            del child.observe

    def take(self) -> dict[str, list[float]]:
        out = {s: list(v) for s, v in self.seconds.items()}
        for v in self.seconds.values():
            v.clear()
        return out
