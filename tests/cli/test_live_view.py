"""The live view of ``nexanest run``: measuring and rendering as pure functions
of two metric snapshots (unit), and ``show`` on a terminal and off one (unit,
no pipeline: the counters are whatever the registry holds)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Sequence

from nexanest.cli.live_view import Quote, Reading, Snapshot, as_text, measure, render, render_table, show

S = 1_000_000_000

# Cumulative latency histogram counts (upper bound s, count), as Prometheus keeps them.
BEFORE_BUCKETS = ((0.005, 10.0), (0.01, 10.0), (0.025, 10.0), (float("inf"), 10.0))
AFTER_BUCKETS = ((0.005, 60.0), (0.01, 105.0), (0.025, 110.0), (float("inf"), 110.0))


def snapshots() -> tuple[Snapshot, Snapshot]:
    before = Snapshot(
        at=10.0, produced=1_000, consumed=900, written=800, rejected=1, lag=50,
        latency_count=10, latency_sum_s=0.02, latency_buckets=BEFORE_BUCKETS,
    )  # fmt: skip
    after = Snapshot(
        at=12.0, produced=5_000, consumed=4_900, written=4_800, rejected=3, lag=20,
        latency_count=110, latency_sum_s=0.52, latency_buckets=AFTER_BUCKETS,
    )  # fmt: skip
    return before, after


def test_plain_line_shows_rates_from_two_snapshots() -> None:
    line = render(*snapshots())
    assert "in     2,000/s" in line
    assert "out     2,000/s" in line
    assert "rows written        4,800" in line
    assert "dead-lettered       3" in line
    assert "lag       20" in line


def test_latency_is_measured_over_the_interval_only() -> None:
    reading = measure(*snapshots())
    assert reading.latency_mean_s == 0.005  # (0.52 - 0.02) s over 100 quotes
    # 100 quotes in the interval: 50 under 5 ms, 95 under 10 ms, all 100 under 25 ms.
    assert reading.latency_p99_s == 0.025
    idle = measure(snapshots()[1], snapshots()[1])
    assert (idle.latency_mean_s, idle.latency_p99_s, idle.in_per_s) == (None, None, 0.0)


def test_the_table_shows_rates_lag_latency_and_quotes() -> None:
    now_ns = 1_764_000_000 * S
    quotes: list[Quote] = [
        ("SYN0000", {"price": "101.25", "bid": "101.2", "ask": "101.3", "size": "7", "exchange": "XNAS",
                     "ts_ns": str(now_ns - S // 2)}),
        ("SYN0001", {}),
    ]  # fmt: skip
    text = as_text(render_table(measure(*snapshots()), quotes, now_ns))
    assert re.search(r"in +2,000 ticks/s", text)
    assert re.search(r"out +2,000 rows/s", text)
    assert re.search(r"rows written +4,800", text)
    assert re.search(r"dead-lettered +3", text)
    assert re.search(r"lag +20 messages", text)
    assert re.search(r"tick to quote +mean 5.0 ms  p99 <= 25.0 ms", text)
    assert re.search(r"SYN0000 .* 101\.25 .* 101\.2 .* 101\.3 .* 7 .* XNAS .* 0\.50 s", text)
    assert re.search(r"SYN0001 +- +- +- +- +- +-", text)  # no quote yet


def test_the_table_says_when_redis_cannot_be_read() -> None:
    reading = Reading(0.0, 0.0, 0.0, 0.0, 0.0, None, float("inf"))
    text = as_text(render_table(reading, None, 0))
    assert "quotes: Redis unavailable" in text
    assert "p99 > 30 s" in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_on_a_terminal_the_view_is_redrawn_in_place_with_quotes() -> None:
    stop = asyncio.Event()
    calls = 0

    async def quotes() -> Sequence[Quote]:
        nonlocal calls
        calls += 1
        if calls == 3:
            stop.set()  # the frame being drawn is the last
        return [("SYN0042", {"price": "7.5"})]

    out = Terminal()
    await show(stop, interval_s=0.01, out=out, quotes=quotes)
    text = out.getvalue()
    assert calls == 3  # the first frame at once, then one per interval
    assert text.count("latest quotes") >= 3  # (rich draws the last frame once more as it stops)
    assert "SYN0042" in text
    assert "\x1b[" in text  # cursor movement: the second frame overwrites the first
    assert "rows/s" in text


async def test_a_failing_quote_reader_does_not_stop_the_view() -> None:
    stop = asyncio.Event()

    async def quotes() -> Sequence[Quote]:
        stop.set()
        raise ConnectionError("redis is down")

    out = Terminal()
    await show(stop, interval_s=0.01, out=out, quotes=quotes)
    assert "quotes: Redis unavailable" in out.getvalue()


class LogFile(io.StringIO):
    """Not a terminal; sets ``full`` once it holds ``lines`` lines."""

    def __init__(self, lines: int, full: asyncio.Event) -> None:
        super().__init__()
        self._lines, self._full = lines, full

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.getvalue().count("\n") >= self._lines:
            self._full.set()
        return written


PLAIN_LINE = re.compile(r"in +[\d,]+/s  out +[\d,]+/s  rows written +[\d,]+  dead-lettered +[\d,]+  lag +[\d,]+")


async def test_off_a_terminal_one_plain_line_per_interval() -> None:
    stop = asyncio.Event()
    out = LogFile(2, full=stop)
    await show(stop, interval_s=0.01, out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(PLAIN_LINE.fullmatch(line) for line in lines)
    assert "\x1b" not in out.getvalue()
