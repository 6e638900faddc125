"""What a user would pick instead: Quix Streams with its PostgreSQL sink (run by the suite in ``.venv-bench``).

Settings come as JSON in ``BENCH_QUIX_CONFIG``; it consumes the topic until idle
and prints one JSON line. Configured as Quix Streams' documentation recommends
for a batching sink: at-least-once, the checkpoint sizing the sink's batches,
``schema_auto_update=False`` and ``include_metadata=False`` (the table exists, with
exactly the columns of ``stock_prices``). Each tick is decoded into the row the
pipeline writes (exact decimals, microsecond times).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
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


class TickDeserializer(Deserializer):  # type: ignore[misc]  # Quix Streams is untyped here (only in .venv-bench)
    """MessagePack tick -> dict with the columns of ``stock_prices``."""

    def __init__(self) -> None:
        super().__init__()
        self._decode = msgspec.msgpack.Decoder(_Tick).decode

    def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
        t = self._decode(value)
        row: dict[str, Any] = {"time": _EPOCH + timedelta(microseconds=t.ts_ns // 1000), "symbol": t.symbol}
        for column, e9 in (("price", t.price_e9), ("size", t.size_e9), ("bid", t.bid_e9), ("ask", t.ask_e9)):
            row[column] = None if e9 is None else Decimal(e9).scaleb(-9)
        return row | {"exchange": t.exchange, "source": t.source, "source_seq": t.seq}


class TimedPostgreSQLSink(PostgreSQLSink):  # type: ignore[misc]  # as above
    """``PostgreSQLSink`` unchanged, each ``write`` (one per partition per checkpoint) timed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes: list[tuple[float, float, int]] = []

    def write(self, batch: Any) -> None:
        started = time.monotonic()
        super().write(batch)
        self.writes.append((started, time.monotonic(), batch.size))


def main() -> None:
    config = json.loads(os.environ["BENCH_QUIX_CONFIG"])
    app = Application(
        broker_address=config["bootstrap"],
        consumer_group=config["group"],
        auto_offset_reset="earliest",
        commit_interval=config["commit_interval"],
        commit_every=config["commit_every"],
        state_dir=config["state_dir"],
        loglevel="WARNING",
    )
    options = {"table_name": config["table"], "schema_auto_update": False, "include_metadata": False}
    sink = TimedPostgreSQLSink(**config["pg"], **options)
    clock = {"messages": 0, "first_message_at": 0.0, "last_message_at": 0.0}  # measurement only

    def add_origin(row: dict[str, Any]) -> None:
        ctx = message_context()
        row["kafka_partition"], row["kafka_offset"] = ctx.partition, ctx.offset
        clock["last_message_at"] = time.monotonic()
        clock["first_message_at"] = clock["first_message_at"] or clock["last_message_at"]
        clock["messages"] += 1

    app.dataframe(app.topic(config["topic"], value_deserializer=TickDeserializer())).update(add_origin).sink(sink)
    app.run(timeout=config["idle_s"], collect=False)
    packages = {
        k.split("-b")[0].replace("-", "_"): version(k) for k in ("quixstreams", "confluent-kafka", "psycopg2-binary")
    }
    written = {"rows_written": sum(n for _, _, n in sink.writes), "writes": sink.writes}
    print(json.dumps(clock | written | packages))


if __name__ == "__main__":
    main()
