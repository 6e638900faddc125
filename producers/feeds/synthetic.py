"""A synthetic market: geometric Brownian motion per symbol, deterministic per seed.

Each symbol starts at a price between 10 and 500, moves by GBM (30% annual
volatility, no drift) on a 1-cent grid, and quotes a bid/ask 1-5 cents either
side. Sizes are round lots with a heavy tail. Tick times come from a simulated
clock (``start_ns`` plus ``1/rate`` per tick, or ``tick_interval_ns`` when set),
so the same seed and start give the same ticks byte for byte, at any speed.
``tick_interval_ns`` decouples tick time from wall time: unpaced, a million
ticks one second apart span 11.6 days of history, generated in seconds.

History and the consumer's time rules
-------------------------------------
The consumer refuses a tick more than ``validation.max_future_s`` ahead of its
clock (``future_timestamp``) and, on the live ticks topic, one more than
``validation.max_past_s`` behind it (``stale_timestamp``). So a run whose
ticks lie in the past (``start_ns`` before now, or ``end_now``: laid out so
that its last tick is now) is history: the feed says ``backfill`` and ``feed
run synthetic`` publishes it to the backfill topic, read without the stale
rule. A run whose tick time would run ahead of the clock is refused before it
starts (``check_tick_times``), instead of every tick being dead-lettered.

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
from nexanest.producers.normalise import check_symbols, live_seq_start
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
#: The fastest an unpaced run can publish, for judging whether its tick time
#: runs ahead of the clock: far above what one publisher does (tens of thousands
#: of ticks/s on the dev machine), so the default 1 µs step is never refused.
_FLAT_OUT_MAX_RATE = 1_000_000


def symbol_names(count: int, prefix: str = "SYN") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(count)]


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
    #: Lay the run out in the past, its last tick at now (needs a known total; ``start_ns`` stays None).
    end_now: bool = False
    #: ``seq`` of the first tick: 0 for a fresh source per run, the clock's ns for a reused one.
    seq_start: int = 0
    symbol_prefix: str = "SYN"

    @property
    def step_ns(self) -> int:
        """The tick time between consecutive ticks."""
        return self.tick_interval_ns or (int(1e9 / self.rate) if self.rate else 1_000)

    @property
    def total(self) -> int | None:
        """How many ticks the run yields, or None when it runs until stopped
        (or, flat out with a duration, until that much wall time has passed)."""
        limits = []
        if self.count is not None:
            limits.append(self.count)
        if self.duration_s is not None and self.rate:
            limits.append(int(self.duration_s * self.rate))
        return min(limits) if limits else None


def first_tick_ns(config: SyntheticConfig, now_ns: int) -> int:
    """The tick time of the run's first tick: ``start_ns``; with ``end_now``,
    so early that the last tick is at ``now_ns``; else ``now_ns``.
    Raises ``ValueError`` when ``end_now`` has no total to lay out."""
    if config.end_now:
        if config.start_ns is not None:
            raise ValueError("--end-now and --start-ns exclude each other: --end-now sets the start")
        total = config.total
        if total is None:
            raise ValueError("--end-now needs --count (or --duration with a rate): the run's length sets its start")
        return now_ns - max(0, total - 1) * config.step_ns
    return now_ns if config.start_ns is None else config.start_ns


def check_tick_times(
    config: SyntheticConfig, now_ns: int, *, max_future_s: float, max_past_s: float | None = None
) -> None:
    """Raise ``ValueError`` (a sentence for the user) when the consumer would refuse
    the run's ticks for their time, before anything is published.

    Tick ``i`` is at ``first + i * step``; it is published no sooner than
    ``i / rate`` after the start when paced (``i / 1e6`` flat out), so a run is
    ahead of the clock by at most ``first - now + i * (step - 1/rate)``, largest
    at its first or last tick, and without end when it grows and the run has no
    total. More than ``max_future_s``: ``future_timestamp``. ``max_past_s``
    (given for the live ticks topic only): a first tick older than that is
    ``stale_timestamp`` there."""
    first = first_tick_ns(config, now_ns)
    rate = config.rate if config.paced and config.rate else _FLAT_OUT_MAX_RATE
    growth = config.step_ns - 1e9 / rate  # per tick: how much further ahead of the clock
    total = config.total
    if growth > 0 and total is None:
        raise ValueError(
            "the tick time would run ahead of the clock without end (--tick-interval longer than 1/--rate): "
            "give --count, and --end-now to lay the run out in the past"
        )
    ahead_ns = max(first - now_ns, first - now_ns + max(0, (total or 1) - 1) * growth)
    if ahead_ns > max_future_s * 1e9:
        raise ValueError(
            f"the ticks would reach {ahead_ns / 1e9:,.0f}s ahead of now, and the consumer refuses ticks more than "
            f"{max_future_s:g}s ahead (future_timestamp, NEXANEST_VALIDATION__MAX_FUTURE_S): use --end-now "
            "(the last tick is now) or an earlier --start-ns"
        )
    if max_past_s is not None and now_ns - first > max_past_s * 1e9:
        raise ValueError(
            f"the first tick would be {(now_ns - first) / 86400e9:,.1f} days old, and the live ticks topic refuses "
            f"ticks older than {max_past_s / 86400:g} days (stale_timestamp, NEXANEST_VALIDATION__MAX_PAST_S): "
            "publish history with `nexanest feed run synthetic`, which sends a run in the past to the backfill topic"
        )


class SyntheticFeed:
    """The synthetic market as a ``FeedAdapter``.

    ``backfill`` (see ``is_backfill``) is True when the run lies in the past:
    ``start_ns`` before now, or ``end_now``."""

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
        now_ns = time.time_ns()
        self.start_ns = first_tick_ns(config, now_ns)
        self.backfill = config.end_now or (config.start_ns is not None and config.start_ns < now_ns)
        self._stopping = False
        self._health = FeedHealth()

    async def start(self, observer: FeedObserver) -> None:
        self._health.connected = True
        await observer.connected(f"{self.config.symbols} symbols, seed {self.config.seed}, source {self.config.source}")

    async def stop(self) -> None:
        self._stopping = True

    def health(self) -> FeedHealth:
        return self._health

    @property
    def ts_range(self) -> tuple[int, int] | None:
        """The tick-time range (ns) of the ticks yielded, for ``feed run``'s bars-refresh hint."""
        last = self._health.last_tick_ns
        return None if last is None else (self.start_ns, last)

    def _yielded(self, batch: list[Tick]) -> None:
        self._health.ticks += len(batch)
        self._health.last_tick_ns = batch[-1].ts_ns

    @property
    def total(self) -> int | None:
        """How many ticks the feed will yield (``SyntheticConfig.total``)."""
        return self.config.total

    def generate(self) -> Iterator[Tick]:
        """All ticks, as fast as they can be computed (no pacing)."""
        c = self.config
        rng = random.Random(c.seed)  # noqa: S311 - a simulation, not cryptography
        names = symbol_names(c.symbols, c.symbol_prefix)
        prices = [rng.randint(10 * 100, 500 * 100) * _CENT_E9 for _ in names]
        exchanges = [_EXCHANGES[i % len(_EXCHANGES)] for i in range(c.symbols)]
        interval_ns = c.step_ns
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
                seq=c.seq_start + seq,
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
        if c.start_ns is None and not c.end_now:
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


def run_identity(source: str | None) -> tuple[str, int]:
    """The source tag and first ``seq`` of a run. By default a tag of its own,
    counted from 0. A tag the user gives may have been used by an earlier run,
    whose ``(source, seq)`` pairs the consumer remembers: counted from 0 again,
    every tick would be dropped as a re-send (silently, by design). So such a
    run counts from the clock's ns, as a live venue feed does
    (``live_seq_start``): past every earlier run's numbers, unless one
    published more than 1e9 ticks per second."""
    if source is None:
        return run_source(), 0
    return source, live_seq_start()


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
        when = parser.add_mutually_exclusive_group()
        when.add_argument(
            "--start-ns",
            type=int,
            help="tick time of the first tick, ns since the epoch (default now); in the past, the run is history "
            "and goes to the backfill topic",
        )
        when.add_argument(
            "--end-now",
            action="store_true",
            help="history: lay the run out so that its last tick is now (needs --count), to the backfill topic",
        )
        parser.add_argument(
            "--tick-interval",
            type=interval_ns,
            help="tick time between ticks, e.g. 1s or 250ms (default 1/rate): with --rate 0 --end-now, history fast",
        )
        parser.add_argument(
            "--source",
            help="source tag (default synthetic-<UTC start>-<4 hex>, one per run, seq from 0); a given tag may "
            "be reused: seq then starts at the clock's ns, past any earlier run's",
        )
        parser.add_argument(
            "--symbol-prefix", default="SYN", help="symbols are PREFIX0000, PREFIX0001, ... (default SYN)"
        )

    def create(self, args: argparse.Namespace, settings: Settings) -> SyntheticFeed:
        """The feed, or ``ValueError`` for a run the consumer would refuse (see
        ``check_tick_times``; the stale rule only with ``--live``) or whose
        symbols it would refuse."""
        source, seq_start = run_identity(args.source)
        config = SyntheticConfig(
            symbols=args.symbols,
            rate=args.rate,
            count=args.count,
            duration_s=args.duration,
            seed=args.seed,
            start_ns=args.start_ns,
            source=source,
            paced=args.rate > 0,
            tick_interval_ns=args.tick_interval,
            end_now=args.end_now,
            seq_start=seq_start,
            symbol_prefix=args.symbol_prefix,
        )
        v = settings.validation
        live = bool(getattr(args, "live", False))
        check_tick_times(config, time.time_ns(), max_future_s=v.max_future_s, max_past_s=v.max_past_s if live else None)
        check_symbols(symbol_names(config.symbols, config.symbol_prefix), v.symbol_pattern)
        return SyntheticFeed(config)
