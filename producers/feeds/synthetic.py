"""A synthetic market: geometric Brownian motion per symbol, deterministic per seed.

Each symbol starts at a price between 10 and 500, moves by GBM (30% annual
volatility, no drift) on a 1-cent grid, and quotes a bid/ask 1-5 cents either
side. Sizes are round lots with a heavy tail. Tick times come from a simulated
clock (``start_ns`` plus ``1/rate`` per tick), so the same seed and start give
the same ticks byte for byte, at any speed.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import ClassVar

from nexanest.schemas.ticks import PRICE_SCALE, Tick

_CENT_E9 = PRICE_SCALE // 100
_EXCHANGES = ("XNAS", "XNYS", "ARCX", "BATS")
_SECONDS_PER_YEAR = 252 * 6.5 * 3600  # trading seconds
_VOLATILITY = 0.30
#: Ticks per yielded batch when running flat out, and the pacing granularity otherwise.
_BATCH = 1_000
_PACE_S = 0.01


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


class SyntheticFeed:
    venue: ClassVar[str] = "synthetic"

    def __init__(self, config: SyntheticConfig) -> None:
        if config.symbols < 1:
            raise ValueError("symbols must be at least 1")
        if config.rate < 0:
            raise ValueError("rate must be >= 0 (0 means as fast as possible)")
        self.config = config
        self.start_ns = time.time_ns() if config.start_ns is None else config.start_ns

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
        interval_ns = int(1e9 / c.rate) if c.rate else 1_000
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
            while batch := _take(source, _BATCH):
                yield batch
                await asyncio.sleep(0)
                if deadline is not None and time.monotonic() >= deadline:
                    return
            return
        per_step = max(1, round(c.rate * _PACE_S))
        started = time.monotonic()
        sent = 0
        while batch := _take(source, per_step):
            yield batch
            sent += len(batch)
            delay = started + sent / c.rate - time.monotonic()
            await asyncio.sleep(max(0.0, delay))


def _take(source: Iterator[Tick], n: int) -> list[Tick]:
    out = []
    for tick in source:
        out.append(tick)
        if len(out) == n:
            break
    return out
