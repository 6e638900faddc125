"""What a user would pick instead: Quix Streams with its PostgreSQL sink.

Run by ``benchmarks/scenarios/suite.py`` with ``.venv-bench/bin/python`` (Quix Streams is
not a dependency of the project). It reads one JSON object from the environment
variable ``BENCH_QUIX_CONFIG`` (``bootstrap``, ``topic``, ``group``, ``table``,
``pg`` with ``host``/``port``/``dbname``/``user``/``password``,
``commit_interval``, ``commit_every``, ``idle_s``, ``state_dir``), consumes the
topic from the beginning until it has been idle for ``idle_s``, and prints one
JSON line with what it wrote and when.

Configured as Quix Streams' documentation recommends for a batching sink:
at-least-once (the default; exactly-once is documented as slower), the
checkpoint (``commit_interval`` / ``commit_every``) sizing the batches that
``PostgreSQLSink`` writes, ``schema_auto_update=False`` because the table
already exists with the right shape (otherwise every batch runs
``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` per column), and
``include_metadata=False`` so that it writes exactly the columns of
``stock_prices`` and no ``__key``/``timestamp`` columns of its own.

The values are MessagePack ticks (``schemas/ticks.py``); a custom deserializer
turns each into the row of ``stock_prices`` the pipeline would write, with the
same exact decimals and microsecond timestamps, and the record's partition and
offset are added from the message context.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
from quixstreams import Application, message_context
from quixstreams.models.serializers import Deserializer
from quixstreams.sinks.community.postgresql import PostgreSQLSink

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Tick(msgspec.Struct, frozen=True):
    """The wire fields, as a user would declare them from the documented format."""

    symbol: str
    exchange: str
    price_e9: int
    size_e9: int
    ts_ns: int
    source: str
    seq: int
    bid_e9: int | None = None
    ask_e9: int | None = None
    v: int = 1


def _decimal(value_e9: int | None) -> Decimal | None:
    return None if value_e9 is None else Decimal(value_e9).scaleb(-9)


class TickDeserializer(Deserializer):  # type: ignore[misc]  # Quix Streams is untyped here (only in .venv-bench)
    """MessagePack tick -> dict with the columns of ``stock_prices``."""

    def __init__(self) -> None:
        super().__init__()
        self._decode = msgspec.msgpack.Decoder(_Tick).decode

    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        t = self._decode(value)
        return {
            "time": _EPOCH + timedelta(microseconds=t.ts_ns // 1000),
            "symbol": t.symbol,
            "price": _decimal(t.price_e9),
            "size": _decimal(t.size_e9),
            "bid": _decimal(t.bid_e9),
            "ask": _decimal(t.ask_e9),
            "exchange": t.exchange,
            "source": t.source,
            "source_seq": t.seq,
        }


class _Clock:
    """Measurement only: when the first and the last message were processed."""

    first_at: float | None = None
    last_at: float | None = None
    messages = 0


class TimedPostgreSQLSink(PostgreSQLSink):  # type: ignore[misc]  # as above
    """``PostgreSQLSink`` unchanged, with each ``write`` (one per partition per
    checkpoint) timed for the benchmark."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[tuple[float, float, int]] = []

    def write(self, batch: Any) -> None:
        started = time.monotonic()
        super().write(batch)
        self.writes.append((started, time.monotonic(), batch.size))


def main() -> int:
    config = json.loads(os.environ["BENCH_QUIX_CONFIG"])
    pg = config["pg"]
    app = Application(
        broker_address=config["bootstrap"],
        consumer_group=config["group"],
        auto_offset_reset="earliest",
        commit_interval=config["commit_interval"],
        commit_every=config["commit_every"],
        state_dir=config["state_dir"],
        loglevel="WARNING",
    )
    topic = app.topic(config["topic"], value_deserializer=TickDeserializer())
    sink = TimedPostgreSQLSink(
        host=pg["host"],
        port=pg["port"],
        dbname=pg["dbname"],
        user=pg["user"],
        password=pg["password"],
        table_name=config["table"],
        schema_auto_update=False,
        include_metadata=False,
    )
    clock = _Clock()

    def add_origin(row: dict[str, Any]) -> None:
        ctx = message_context()
        row["kafka_partition"] = ctx.partition
        row["kafka_offset"] = ctx.offset
        now = time.monotonic()
        if clock.first_at is None:
            clock.first_at = now
        clock.last_at = now
        clock.messages += 1

    sdf = app.dataframe(topic)
    sdf = sdf.update(add_origin)
    sdf.sink(sink)
    app.run(timeout=config["idle_s"], collect=False)

    print(
        json.dumps(
            {
                "messages": clock.messages,
                "first_message_at": clock.first_at,
                "last_message_at": clock.last_at,
                "rows_written": sum(n for _, _, n in sink.writes),
                "writes": sink.writes,
                "quixstreams": _version("quixstreams"),
                "confluent_kafka": _version("confluent-kafka"),
                "psycopg2": _version("psycopg2-binary"),
            }
        )
    )
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    sys.exit(main())
