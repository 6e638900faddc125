"""``upsert_bars``: a batch's bars merged into the Apache edition's rollup tables.

One statement per batch (one round trip), in the transaction that COPYs the
batch's ticks: it takes the 1 minute bars (``ohlcv.minute_bars``), folds the 5m,
1h and 1d bars from them in SQL, merges all four resolutions into what is stored
(``ON CONFLICT``: open/close by (tick time, source_seq), high/low by
greatest/least, volume, trade count and sum(price * size) by addition), and
returns the latest merged bar per symbol and resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

import asyncpg
import msgspec

from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS, ROLLUP_COLUMNS, ROLLUP_TABLES, Bars, Resolution, StoredBar

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# How a stored bar (r) absorbs a batch's partial bar of the same key (EXCLUDED); the
# Python twin is ``merge`` in tests/pipeline/sinks/ohlcv_reference.py. Every SET
# expression reads the stored row as it was, so the CASEs compare old to new.
_MERGE: Final = """
ON CONFLICT (symbol, bucket) DO UPDATE SET
    open = CASE WHEN (EXCLUDED.open_time, EXCLUDED.open_seq) < (r.open_time, r.open_seq)
                THEN EXCLUDED.open ELSE r.open END,
    open_time = CASE WHEN (EXCLUDED.open_time, EXCLUDED.open_seq) < (r.open_time, r.open_seq)
                     THEN EXCLUDED.open_time ELSE r.open_time END,
    open_seq = CASE WHEN (EXCLUDED.open_time, EXCLUDED.open_seq) < (r.open_time, r.open_seq)
                    THEN EXCLUDED.open_seq ELSE r.open_seq END,
    high = GREATEST(r.high, EXCLUDED.high),
    low = LEAST(r.low, EXCLUDED.low),
    close = CASE WHEN (EXCLUDED.close_time, EXCLUDED.close_seq) > (r.close_time, r.close_seq)
                 THEN EXCLUDED.close ELSE r.close END,
    close_time = CASE WHEN (EXCLUDED.close_time, EXCLUDED.close_seq) > (r.close_time, r.close_seq)
                      THEN EXCLUDED.close_time ELSE r.close_time END,
    close_seq = CASE WHEN (EXCLUDED.close_time, EXCLUDED.close_seq) > (r.close_time, r.close_seq)
                     THEN EXCLUDED.close_seq ELSE r.close_seq END,
    volume = r.volume + EXCLUDED.volume,
    trade_count = r.trade_count + EXCLUDED.trade_count,
    pv = r.pv + EXCLUDED.pv
RETURNING symbol, bucket, open, high, low, close, volume, trade_count, pv
"""

# -- one statement per batch (upsert_bars) -------------------------------------
#
# Measured on 5,000-tick batches over 300 symbols, the bars already stored (as in
# a running consumer): the previous form, four statements with 5m/1h/1d folded in
# Python (now tests/pipeline/sinks/ohlcv_reference.py), took
# ~83 ms a batch, of which the server executed ~6 ms per statement. The rest was
# client work: folding 5m/1h/1d in Python (~9 ms), building 4 x 13 argument
# arrays (~3 ms), asyncpg encoding them element by element (~5.5 ms per statement;
# a timestamptz element ~3 us, text ~1.3 us) and decoding 4 x 300 returned rows
# into Decimals (~2-3 ms per statement); the 4 round trips were the least of it
# (0.15 ms each). This statement takes the 1m bars only, folds the coarser ones in
# SQL (a few tenths of a ms for 900 groups), merges all four resolutions and returns
# the latest merged bar per symbol and resolution as one JSON value: ~54 ms a batch,
# of which the server's execution is now ~39 ms (1,200 conflicting upserts).

# Times travel as epoch microseconds: an interval times a float8 below 2**53 is
# exact, so this is exact for times within ~285 years of 1970 (the tick validator
# accepts a window of days around now). Seconds-only intervals: adding days to a
# timestamptz would depend on the session time zone.
_US_TO_TIMESTAMPTZ: Final = "(TIMESTAMPTZ 'epoch' + {us} * INTERVAL '1 microsecond')"


def _fold_into(table: str, width: str) -> str:
    """The coarser bars of the batch's 1m bars ``u``, merged into ``table``.

    Open and close by (time, seq) with ordered aggregates: the 1m bars of one
    symbol have distinct open (and close) times, so there are no ties."""
    return f"""
INSERT INTO {table} AS r ({ROLLUP_COLUMNS})
SELECT symbol, time_bucket(INTERVAL '{width}', bucket) AS coarse,
       (array_agg(open ORDER BY open_time, open_seq))[1], min(open_time),
       (array_agg(open_seq ORDER BY open_time, open_seq))[1],
       max(high), min(low),
       (array_agg(close ORDER BY close_time DESC, close_seq DESC))[1], max(close_time),
       (array_agg(close_seq ORDER BY close_time DESC, close_seq DESC))[1],
       sum(volume), sum(trade_count), sum(pv)
  FROM u
 GROUP BY symbol, coarse
 ORDER BY symbol, coarse
{_MERGE}"""


def _latest(resolution: Resolution, cte: str) -> str:
    return f"(SELECT DISTINCT ON (symbol) '{resolution}' AS resolution, * FROM {cte} ORDER BY symbol, bucket DESC)"


_BATCH_CTES: Final[Mapping[Resolution, str]] = {"1m": "m1", "5m": "m5", "1h": "h1", "1d": "d1"}

# Order matters twice. The rollup tables appear 1m, 5m, 1h, 1d: PostgreSQL takes
# their ROW EXCLUSIVE locks at the start of the statement in that order, the order of
# repair's LOCK TABLE, so neither can deadlock the other. And ``latest`` reads the
# CTEs in that order, so their upserts run one after the other in it (each input
# sorted by key: concurrent writers lock rows in the same order).
# Numbers (bigint and numeric columns) travel as the text of an array literal:
# PostgreSQL's array_in parses it in C, where asyncpg's array codec spends about a
# microsecond per element. A number never needs quoting; symbols travel as a real text[].
_UPSERT_BATCH: Final = f"""
WITH u AS MATERIALIZED (
    SELECT symbol,
           {_US_TO_TIMESTAMPTZ.format(us="bucket_us")} AS bucket,
           open::NUMERIC(20, 9) AS open,
           {_US_TO_TIMESTAMPTZ.format(us="open_us")} AS open_time,
           open_seq,
           high::NUMERIC(20, 9) AS high,
           low::NUMERIC(20, 9) AS low,
           close::NUMERIC(20, 9) AS close,
           {_US_TO_TIMESTAMPTZ.format(us="close_us")} AS close_time,
           close_seq,
           volume::NUMERIC(40, 9) AS volume,
           trade_count,
           pv::NUMERIC(60, 18) AS pv
      FROM unnest($1::text[], $2::text::bigint[], $3::text::text[], $4::text::bigint[], $5::text::bigint[],
                  $6::text::text[], $7::text::text[], $8::text::text[], $9::text::bigint[], $10::text::bigint[],
                  $11::text::text[], $12::text::bigint[], $13::text::text[])
           AS b(symbol, bucket_us, open, open_us, open_seq, high, low, close, close_us, close_seq,
                volume, trade_count, pv)
),
m1 AS (
INSERT INTO {ROLLUP_TABLES["1m"]} AS r ({ROLLUP_COLUMNS})
SELECT {ROLLUP_COLUMNS} FROM u ORDER BY symbol, bucket
{_MERGE}),
m5 AS ({_fold_into(ROLLUP_TABLES["5m"], "5 minutes")}),
h1 AS ({_fold_into(ROLLUP_TABLES["1h"], "1 hour")}),
d1 AS ({_fold_into(ROLLUP_TABLES["1d"], "1 day")}),
latest AS (
    {" UNION ALL ".join(_latest(r, _BATCH_CTES[r]) for r in RESOLUTIONS)}
)
SELECT json_agg(json_build_array(
           resolution, symbol, (extract(epoch FROM bucket - TIMESTAMPTZ 'epoch') * 1000000)::bigint,
           open, high, low, close, volume, trade_count, (pv / NULLIF(volume, 0))::NUMERIC(20, 9)))::text
  FROM latest
"""

# One returned bar: resolution, symbol, bucket (epoch us), open, high, low, close,
# volume, trade_count, vwap. JSON numbers decode to Decimal exactly, with the
# scale PostgreSQL printed (as asyncpg's numeric decoding gives it).
_BatchRow = tuple[Resolution, str, int, Decimal, Decimal, Decimal, Decimal, Decimal, int, Decimal | None]
_BATCH_ROWS: Final = msgspec.json.Decoder(list[_BatchRow])


def _literal(values: Iterable[object]) -> str:
    """An array literal of numbers (ints or Decimals: never anything to quote)."""
    return "{" + ",".join(map(str, values)) + "}"


def _epoch_us(t: datetime) -> int:
    return (t - _EPOCH) // _MICROSECOND


_MICROSECOND: Final = timedelta(microseconds=1)


def _batch_arguments(minute: Bars) -> list[str | list[str]]:
    # Sorted keys: concurrent writers (a fenced consumer still finishing, a
    # rebalance overlap) then lock rows in the same order and cannot deadlock.
    items = sorted(minute.items(), key=lambda kv: kv[0])
    bars = [b for _, b in items]
    return [
        [k[0] for k, _ in items],
        _literal(_epoch_us(k[1]) for k, _ in items),
        _literal(b.open for b in bars),
        _literal(_epoch_us(b.open_time) for b in bars),
        _literal(b.open_seq for b in bars),
        _literal(b.high for b in bars),
        _literal(b.low for b in bars),
        _literal(b.close for b in bars),
        _literal(_epoch_us(b.close_time) for b in bars),
        _literal(b.close_seq for b in bars),
        _literal(b.volume for b in bars),
        _literal(b.trade_count for b in bars),
        _literal(b.pv for b in bars),
    ]


async def upsert_bars(conn: asyncpg.Connection, minute: Bars) -> list[StoredBar]:
    """Merge a batch's 1m bars, and the 5m, 1h and 1d bars folded from them, into
    the rollup tables: one statement (one round trip) in the caller's
    transaction, tables locked and written 1m first (the order of ``repair``'s lock).

    Returns, per resolution, the latest bar of each symbol the batch touched, as
    merged and stored (not the batch's partial bar). They are only true once the
    caller's transaction commits."""
    if not minute:
        return []
    data = await conn.fetchval(_UPSERT_BATCH, *_batch_arguments(minute))
    return [
        StoredBar(res, symbol, _EPOCH + timedelta(microseconds=us), o, h, lo, c, v, n, vwap)
        for res, symbol, us, o, h, lo, c, v, n, vwap in _BATCH_ROWS.decode(data)
    ]
