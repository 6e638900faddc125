"""One benchmark run's names, settings and count checks.

Everything a run creates carries its run id (a letter naming the script and 8
hex digits), so ``harness.cleanup`` can find it and never touches anything
else: topics ``bench.<run>.*``, consumer groups and ``source`` tags
``bench-<run>-*``, Redis keys ``bench:<run>:*``, scratch tables ``bench_<run>_*``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.producers.feeds.synthetic import SyntheticConfig


class CountMismatch(Exception):
    """A consumer did not write (or read) every row it should have: no rate is reported for it."""


class BenchError(Exception):
    """The run could not measure what it set out to (the message says why)."""


def new_run_id(letter: str) -> str:
    return letter + uuid.uuid4().hex[:8]


def feed_config(ticks: int, symbols: int, seed: int, source: str, start_ns: int) -> SyntheticConfig:
    """The benchmarks' ticks: fixed seed, tick times 10 µs apart, published flat out."""
    return SyntheticConfig(
        symbols=symbols, rate=100_000, count=ticks, seed=seed, start_ns=start_ns, source=source, paced=False
    )


@dataclass
class Run:
    """Names and checks of one run (``letter`` names the script: s, b, o, g, k, p)."""

    base: Settings
    letter: str = "s"
    run_id: str = ""
    sources: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_id = self.run_id or new_run_id(self.letter)

    @property
    def prefix(self) -> str:
        return f"bench.{self.run_id}"

    @property
    def feed_topic(self) -> str:
        """The feed every reader of the suite shares (limits, pipeline, alternatives)."""
        return self.topic("a")

    def topic(self, feed: str) -> str:
        return f"{self.prefix}.ticks-{feed}"

    @property
    def admin_dsn(self) -> str:
        return self.base.timescale.admin_dsn.get_secret_value()

    def source(self, name: str = "") -> str:
        source = f"bench-{self.run_id}" + (f"-{name}" if name else "")
        self.sources.append(source)
        return source

    def group(self, scenario: str) -> str:
        """A consumer group never used before (a scenario run twice gets a new one)."""
        group, n = f"bench-{self.run_id}-{scenario}", 1
        while group in self.groups:
            n += 1
            group = f"bench-{self.run_id}-{scenario}-{n}"
        self.groups.append(group)
        return group

    def settings(self, scenario: str, topic: str | None = None, **consumer: object) -> Settings:
        """The pipeline's settings with this scenario's topics, group, Redis keys and no metrics server."""
        b = self.base
        keys = f"bench:{self.run_id}:{scenario}"
        return b.model_copy(
            update={
                "kafka": b.kafka.model_copy(
                    update={
                        "ticks_topic": topic or self.feed_topic,
                        "dead_letter_topic": f"{self.prefix}.{scenario}.dlq",
                        "events_topic": f"{self.prefix}.{scenario}.events",
                        "consumer_group": self.group(scenario),
                    }
                ),
                "redis": b.redis.model_copy(
                    update={"quote_key_prefix": f"{keys}:quote:", "bar_key_prefix": f"{keys}:bar:"}
                ),
                "metrics": b.metrics.model_copy(update={"port": 0}),
                "consumer": b.consumer.model_copy(update=consumer),
            }
        )

    @staticmethod
    def env(settings: Settings, **extra: str) -> dict[str, str]:
        """Environment of a ``nexanest`` subprocess running with ``settings`` (DSNs stay off its command line)."""
        return {
            **os.environ,
            **namespace_environment(settings),
            "NEXANEST_METRICS__PORT": "0",
            "NEXANEST_LOG__LEVEL": "warning",
            **extra,
        }

    def check(self, scenario: str, what: str, expected: int, actual: int) -> None:
        """Record a count check; raise ``CountMismatch`` if it fails."""
        ok = expected == actual
        self.checks.append({"scenario": scenario, "what": what, "expected": expected, "actual": actual, "ok": ok})
        if not ok:
            raise CountMismatch(f"{scenario}: {what}: expected {expected:,}, got {actual:,}")

    async def scratch_table(self, conn: asyncpg.Connection, name: str) -> str:
        """An empty hypertable shaped like ``stock_prices`` (columns, defaults,
        constraints, indexes, chunk interval); ``harness.cleanup`` drops it."""
        table = f"bench_{self.run_id}_{name}"
        interval = await conn.fetchval(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'stock_prices' AND column_name = 'time'"
        )
        await conn.execute(f"CREATE TABLE {table} (LIKE stock_prices INCLUDING ALL)")
        await conn.execute(
            "SELECT create_hypertable($1::regclass, 'time', chunk_time_interval => $2::interval)", table, interval
        )
        return table

    async def count_rows(self, table: str = "stock_prices", source: str | None = None) -> int:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            if source is None:
                return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE source = $1", source))
        finally:
            await conn.close()
