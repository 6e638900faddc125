"""A synthetic market: geometric Brownian motion per symbol, deterministic per seed.

Each symbol starts at a price between 10 and 500, moves by GBM (30% annual
volatility, no drift) on a 1-cent grid, and quotes a bid/ask 1-5 cents either
side. Sizes are round lots with a heavy tail. Tick times come from a simulated
clock (``start_ns`` plus ``1/rate`` per tick, or ``tick_interval_ns`` when set),
so the same seed and start give the same ticks byte for byte, at any speed.
``tick_interval_ns`` decouples tick time from wall time: unpaced, a million
ticks one second apart span 11.6 days of history, generated in seconds.

It is the built-in feed ``synthetic`` (``SyntheticPlugin``, registered in
``pyproject.toml`` under ``nexanest.feeds``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from nexanest.producers.feeds.adapter import FeedHealth, FeedObserver
from nexanest.schemas.ticks import PRICE_SCALE, Tick

if TYPE_CHECKING:
    from nexanest.pipeline.settings import Settings

_CENT_E9 = PRICE_SCALE // 100
_EXCHANGES = ("XNAS", "XNYS", "ARCX", "BATS")
_SECONDS_PER_YEAR = 252 * 6.5 * 3600  # trading seconds
_VOLATILITY = 0.30
#: Ticks per yielded batch when running flat out (and at most when paced), and the
#: pacing step: a paced tick waits at most this long for its batch. 10 ms added 5 ms
#: to the mean tick-to-quote latency; 2 ms cost the feed process 0.15-0.2 of a core
#: more than 10 ms at 20k ticks/s (many small record batches), 5 ms about 0.08.
_BATCH = 1_000
_PACE_S = 0.005


def symbol_names(count: int) -> list[str]:
    return [f"SYN{i:04d}" for i in range(count)]


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    symbols: int = 50
    #: Ticks per second, in simulated time and (when paced) in wall time; 0 = flat out.
    rate: float = 1_000.0
    count: int | None = None
    duration_s: float | None = None
    seed: int = 42
    start_ns: int | None = None
    source: str = "synthetic"
    paced: bool = True
    #: Tick time between consecutive ticks (ns); None = ``1/rate`` (1 µs when flat out).
    tick_interval_ns: int | None = None


class SyntheticFeed:
    """The synthetic market as a ``FeedAdapter``."""

    name: ClassVar[str] = "synthetic"
    venue: ClassVar[str] = "synthetic"

    def __init__(self, config: SyntheticConfig) -> None:
        if config.symbols < 1:
            raise ValueError("symbols must be at least 1")
        if config.rate < 0:
            raise ValueError("rate must be >= 0 (0 means as fast as possible)")
        if config.tick_interval_ns is not None and config.tick_interval_ns < 1:
            raise ValueError("tick_interval_ns must be at least 1")
        self.config = config
        self.start_ns = time.time_ns() if config.start_ns is None else config.start_ns
        self._stopping = False
        self._health = FeedHealth()

    async def start(self, observer: FeedObserver) -> None:
        self._health.connected = True
        await observer.connected(f"{self.config.symbols} symbols, seed {self.config.seed}, source {self.config.source}")

    async def stop(self) -> None:
        self._stopping = True

    def health(self) -> FeedHealth:
        return self._health

    def _yielded(self, batch: list[Tick]) -> None:
        self._health.ticks += len(batch)
        self._health.last_tick_ns = batch[-1].ts_ns

    @property
    def total(self) -> int | None:
        """How many ticks the feed will yield, or None when it runs until stopped
        (or, flat out with a duration, until that much wall time has passed)."""
        c = self.config
        limits = []
        if c.count is not None:
            limits.append(c.count)
        if c.duration_s is not None and c.rate:
            limits.append(int(c.duration_s * c.rate))
        return min(limits) if limits else None

    def generate(self) -> Iterator[Tick]:
        """All ticks, as fast as they can be computed (no pacing)."""
        c = self.config
        rng = random.Random(c.seed)  # noqa: S311 - a simulation, not cryptography
        names = symbol_names(c.symbols)
        prices = [rng.randint(10 * 100, 500 * 100) * _CENT_E9 for _ in names]
        exchanges = [_EXCHANGES[i % len(_EXCHANGES)] for i in range(c.symbols)]
        interval_ns = c.tick_interval_ns or (int(1e9 / c.rate) if c.rate else 1_000)
        # Per-tick time step of one symbol, in years, if ticks spread evenly over symbols.
        dt_years = (c.symbols * interval_ns / 1e9) / _SECONDS_PER_YEAR
        drift = -0.5 * _VOLATILITY**2 * dt_years
        shock = _VOLATILITY * math.sqrt(dt_years)
        total = self.total
        seq = 0
        while total is None or seq < total:
            i = rng.randrange(c.symbols)
            price = prices[i] * math.exp(drift + shock * rng.gauss(0.0, 1.0))
            price_e9 = max(_CENT_E9, round(price / _CENT_E9) * _CENT_E9)
            prices[i] = price_e9
            half_spread = rng.randint(1, 5) * _CENT_E9
            lots = max(1, int(rng.paretovariate(1.5)))
            yield Tick(
                symbol=names[i],
                exchange=exchanges[i],
                price_e9=price_e9,
                size_e9=lots * 100 * PRICE_SCALE,
                ts_ns=self.start_ns + seq * interval_ns,
                source=c.source,
                seq=seq,
                bid_e9=max(_CENT_E9, price_e9 - half_spread),
                ask_e9=price_e9 + half_spread,
            )
            seq += 1

    async def ticks(self) -> AsyncIterator[list[Tick]]:
        """Yield batches; when paced, at ``rate`` ticks per second of wall time."""
        c = self.config
        source = self.generate()
        if not c.paced or not c.rate:
            # Flat out: a duration is wall time, since the tick count is unknown.
            deadline = None if c.duration_s is None else time.monotonic() + c.duration_s
            while not self._stopping and (batch := _take(source, _BATCH)):
                self._yielded(batch)
                yield batch
                await asyncio.sleep(0)
                if deadline is not None and time.monotonic() >= deadline:
                    return
            return
        if c.start_ns is None:
            # Tick time is when the tick is due in wall time, counted from here, where
            # pacing starts: anchored when the feed was made, the publisher's start-up
            # (topics, producer, events) would be charged to every tick as latency.
            self.start_ns = time.time_ns()
        started = time.monotonic()
        sent = 0
        while not self._stopping:
            # Yield the ticks whose time has come (tick i is due at started + i/rate),
            # never one ahead of its time: a tick waits at most one step here.
            due = int((time.monotonic() - started) * c.rate) + 1
            if due > sent:
                batch = _take(source, min(due - sent, _BATCH))
                if not batch:
                    return
                self._yielded(batch)
                yield batch
                sent += len(batch)
            next_due = started + sent / c.rate - time.monotonic()
            await asyncio.sleep(max(_PACE_S, next_due))


def _take(source: Iterator[Tick], n: int) -> list[Tick]:
    out = []
    for tick in source:
        out.append(tick)
        if len(out) == n:
            break
    return out


_UNITS_NS: Final = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_INTERVAL: Final = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def interval_ns(text: str) -> int:
    """A tick interval such as ``1s``, ``250ms``, ``1.5s`` or ``100us``, in ns (at least 1)."""
    match = _INTERVAL.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"an interval is a number and a unit (ns, us, ms, s, m, h), not {text!r}")
    whole, _, frac = match.group(1).partition(".")
    unit = _UNITS_NS[match.group(2)]
    value = int(whole) * unit + int(frac or "0") * unit // int("1" + "0" * len(frac))
    if value < 1:
        raise argparse.ArgumentTypeError(f"an interval must be at least 1ns, not {text!r}")
    return value


def run_source(prefix: str = "synthetic") -> str:
    """A source tag of one run: seq starts at 0 every run, so runs must not share one."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


class SyntheticPlugin:
    """``nexanest feed run synthetic``: the ``nexanest.feeds`` entry point of this feed."""

    name = "synthetic"
    summary = "geometric Brownian motion ticks, deterministic for a seed (--tick-interval spreads them over time)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--symbols", type=int, default=50, help="number of symbols (default 50)")
        parser.add_argument(
            "--rate", type=float, default=1000.0, help="ticks per second of wall time, 0 = flat out (default 1000)"
        )
        parser.add_argument("--count", type=int, help="stop after this many ticks")
        parser.add_argument("--duration", type=float, help="stop after this many seconds")
        parser.add_argument("--seed", type=int, default=42, help="random seed; same seed, same ticks (default 42)")
        parser.add_argument(
            "--start-ns", type=int, help="tick time of the first tick, ns since the epoch (default now)"
        )
        parser.add_argument(
            "--tick-interval",
            type=interval_ns,
            help="tick time between ticks, e.g. 1s or 250ms (default 1/rate): with --rate 0, history fast",
        )
        parser.add_argument("--source", help="source tag (default synthetic-<UTC start>-<4 hex>, one per run)")

    def create(self, args: argparse.Namespace, settings: Settings) -> SyntheticFeed:
        return SyntheticFeed(
            SyntheticConfig(
                symbols=args.symbols,
                rate=args.rate,
                count=args.count,
                duration_s=args.duration,
                seed=args.seed,
                start_ns=args.start_ns,
                source=args.source or run_source(),
                paced=args.rate > 0,
                tick_interval_ns=args.tick_interval,
            )
        )
