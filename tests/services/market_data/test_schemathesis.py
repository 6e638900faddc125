"""schemathesis against ``nexanest serve market-data`` (real TimescaleDB as the
read-only role, Redis, the auth service's sessions): no server error, every
response as declared.

A second run puts a symbol with a quote, ticks and bars in every ``{symbol}``
(and an index with values in ``{name}``), so that the answers behind the 404s and
the empty pages are fuzzed too. ``/stream/quotes`` is left out: a stream that
is accepted never ends, so the fuzzer would wait on it for ever; its refusals
are tested in ``test_stream.py``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from nexanest.pipeline.settings import Settings
from nexanest.pipeline.sinks.redis_quotes import RedisQuoteSink
from nexanest.pipeline.sinks.timescale import TimescaleSink
from nexanest.schemas.ticks import Tick
from tests.services.fuzzing import answered_about, assert_clean, bearer_of_a_new_user, fuzz
from tests.services.market_data.conftest import symbol_of
from tests.services.served import served

pytestmark = pytest.mark.integration

NOT_THE_STREAM = ("--exclude-path", "/stream/quotes")


async def test_market_data_has_no_server_error_and_keeps_its_schema(
    migrated: Settings, timescale_pool: asyncpg.Pool, test_id: str, tmp_path: Path
) -> None:
    symbol, index = symbol_of(test_id), symbol_of(test_id, "IX")
    now_ns = time.time_ns()
    ticks = [
        Tick(symbol, "XTST", (100 + n) * 10**9, 10**9, now_ns - n * 10**9, f"fuzz-{test_id}", n, bid_e9=99 * 10**9)
        for n in range(200)
    ]
    sink = TimescaleSink(timescale_pool, None, rollups=True)
    sink.write([(t, 0, n) for n, t in enumerate(ticks)])
    await sink.flush()
    await timescale_pool.execute(
        "INSERT INTO market_indices (time, index_name, value, constituents, method) VALUES ($1, $2, $3, 2, 'x')",
        datetime.now(UTC) - timedelta(minutes=1),
        index,
        Decimal("101.5"),
    )
    client = redis.Redis.from_url(migrated.redis.url.get_secret_value(), db=migrated.redis.db_quotes)
    try:
        quotes = RedisQuoteSink(client, migrated.redis.quote_key_prefix)
        quotes.write(ticks[:1])
        await quotes.flush()
        auth_log, log = tmp_path / "auth.log", tmp_path / "market-data.log"
        with served("auth", migrated, auth_log) as auth_url:
            token = bearer_of_a_new_user(auth_url)
            with served("market-data", migrated, log) as url:
                assert_clean(fuzz(url, token, tmp_path / "generated.toml", *NOT_THE_STREAM), "market-data", log)
                known = fuzz(url, token, tmp_path / "known.toml", *NOT_THE_STREAM, symbol=symbol, name=index)
                assert_clean(known, "market-data", log)
        assert answered_about(log, symbol, '"status":200') >= 20, "the fuzzer hardly reached the symbol's data"
    finally:
        await client.delete(migrated.redis.quote_key_prefix + symbol)
        await client.aclose()
