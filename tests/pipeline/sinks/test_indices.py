"""IndexSink and index_value with in-memory fakes (no services); the consumer
integration test (tests/consumers/test_ticks_to_timescale_indices.py) runs it
against TimescaleDB and Redis."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from nexanest.pipeline.errors import RetryableError
from nexanest.pipeline.settings import IndexDefinition, Settings
from nexanest.pipeline.sinks.indices import IndexSink, index_value
from nexanest.schemas.ticks import Tick

T0_NS = 1_764_000_000_000_000_000  # whole microseconds
E9 = 10**9

PRICE_WEIGHTED = IndexDefinition(name="PW3", method="price_weighted", symbols=["AAA", "BBB", "CCC"], divisor=Decimal(3))
EQUAL_WEIGHT = IndexDefinition(
    name="EW3",
    method="equal_weight",
    symbols=["AAA", "BBB", "CCC"],
    base_value=Decimal(1000),
    base_prices={"AAA": Decimal(100), "BBB": Decimal(50), "CCC": Decimal(200)},
)


def tick(symbol: str, price: str, ts_ns: int, seq: int) -> Tick:
    return Tick(
        symbol=symbol,
        exchange="X",
        price_e9=int(Decimal(price) * E9),
        size_e9=E9,
        ts_ns=ts_ns,
        source="t",
        seq=seq,
    )


def test_price_weighted_is_the_sum_over_the_divisor() -> None:
    prices = {"AAA": 101_250_000_000, "BBB": 48_500_000_000, "CCC": 250_125_000_000}
    # (101.25 + 48.5 + 250.125) / 3 = 399.875 / 3 = 133.2916666..., kept to 9 decimals.
    assert index_value(PRICE_WEIGHTED, prices) == Decimal("133.291666667")
    dow_like = PRICE_WEIGHTED.model_copy(update={"divisor": Decimal("0.5")})
    assert index_value(dow_like, prices) == Decimal("799.750000000")


def test_equal_weight_is_the_mean_ratio_to_base_prices_times_base_value() -> None:
    # 110/100 = 1.1, 45/50 = 0.9, 230/200 = 1.15; mean 1.05; x 1000.
    prices = {"AAA": 110 * E9, "BBB": 45 * E9, "CCC": 230 * E9}
    assert index_value(EQUAL_WEIGHT, prices) == Decimal("1050.000000000")
    at_base = {"AAA": 100 * E9, "BBB": 50 * E9, "CCC": 200 * E9}
    assert index_value(EQUAL_WEIGHT, at_base) == Decimal("1000.000000000")
    # 1/3 of (100.000000001/100 + 1 + 1) x 1000: the tenth digit rounds half-even.
    nudged = {**at_base, "AAA": 100 * E9 + 1}
    assert index_value(EQUAL_WEIGHT, nudged) == Decimal("1000.000000003")


def test_price_weighted_divisor_defaults_to_the_constituent_count() -> None:
    plain = IndexDefinition(name="AVG", method="price_weighted", symbols=["AAA", "BBB"])
    assert index_value(plain, {"AAA": 10 * E9, "BBB": 20 * E9}) == Decimal("15.000000000")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "equal_weight", "symbols": ["A", "B"], "base_prices": {"A": 1}}, "base price for each"),
        ({"method": "equal_weight", "symbols": ["A"], "base_prices": {"A": 0}}, "base price for each"),
        ({"method": "equal_weight", "symbols": ["A"], "base_prices": {"A": 1}, "divisor": 2}, "divisor is for"),
        ({"method": "price_weighted", "symbols": ["A"], "base_prices": {"A": 1}}, "base_prices is for"),
        ({"method": "price_weighted", "symbols": ["A", "A"]}, "listed twice"),
        ({"method": "price_weighted", "symbols": ["IDX"]}, "its own constituent"),
        ({"method": "price_weighted", "symbols": []}, "at least 1"),
        ({"method": "price_weighted", "symbols": ["A"], "divisor": 0}, "greater than 0"),
    ],
)
def test_inconsistent_definitions_are_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexDefinition(name="IDX", **fields)


def test_indices_come_from_a_json_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "NEXANEST_INDICES",
        json.dumps(
            [
                {"name": "TECH3", "method": "price_weighted", "symbols": ["AAPL", "MSFT", "NVDA"], "divisor": "0.15"},
                {
                    "name": "EQ2",
                    "method": "equal_weight",
                    "symbols": ["AAPL", "MSFT"],
                    "base_prices": {"AAPL": "190.5", "MSFT": 410},
                },
            ]
        ),
    )
    indices = Settings(_env_file=None).indices  # type: ignore[call-arg]
    assert [(d.name, d.method, d.divisor) for d in indices] == [
        ("TECH3", "price_weighted", Decimal("0.15")),
        ("EQ2", "equal_weight", None),
    ]
    assert indices[1].base_prices == {"AAPL": Decimal("190.5"), "MSFT": Decimal(410)}
    monkeypatch.setenv(
        "NEXANEST_INDICES", json.dumps([{"name": "X", "method": "price_weighted", "symbols": ["A"]}] * 2)
    )
    with pytest.raises(ValueError, match="share a name"):
        Settings(_env_file=None)  # type: ignore[call-arg]


class FakePool:
    """Answers the sink's two seed queries from fixed rows; records inserts."""

    def __init__(self, stored: list[dict[str, Any]] | None = None, last_rows: list[dict[str, Any]] | None = None):
        self.stored = stored or []
        self.last_rows = last_rows or []
        self.inserted: list[tuple[Any, ...]] = []
        self.fail_next_insert = False

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        return self.last_rows if "market_indices" in query else [r for r in self.stored if r["symbol"] in args[0]]

    async def execute(self, query: str, *columns: list[Any]) -> str:
        if self.fail_next_insert:
            self.fail_next_insert = False
            raise ConnectionResetError("gone")
        self.inserted.extend(zip(*columns, strict=True))
        return f"INSERT 0 {len(columns[0])}"


class FakeQuotes:
    def __init__(self) -> None:
        self.pending: list[Tick] = []
        self.applied: list[Tick] = []

    def write(self, rows: Sequence[Tick]) -> None:
        self.pending.extend(rows)

    async def flush(self, *, observe_latency: bool = True) -> int:
        self.applied.extend(self.pending)
        n, self.pending = len(self.pending), []
        return n


def make_sink(pool: FakePool, quotes: FakeQuotes, *definitions: IndexDefinition) -> IndexSink:
    return IndexSink(pool, quotes, definitions or (PRICE_WEIGHTED, EQUAL_WEIGHT))  # type: ignore[arg-type]


def us(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns // 1000 / 1e6, tz=UTC)


async def test_an_index_publishes_once_every_constituent_has_a_price() -> None:
    pool, quotes = FakePool(), FakeQuotes()
    sink = make_sink(pool, quotes, PRICE_WEIGHTED)
    sink.write([tick("AAA", "101.25", T0_NS, 1), tick("BBB", "48.5", T0_NS + 1_000, 2), tick("ZZZ", "1", T0_NS, 3)])
    assert await sink.flush() == 0
    assert pool.inserted == []
    assert quotes.applied == []

    sink.write([tick("CCC", "250.125", T0_NS + 5_000, 4)])
    assert await sink.flush() == 1
    (row,) = pool.inserted
    assert row == (us(T0_NS + 5_000), "PW3", Decimal("133.291666667"), 3, "price_weighted")
    (quote,) = quotes.applied
    assert (quote.symbol, quote.exchange, quote.price_e9, quote.ts_ns) == (
        "PW3",
        "INDEX",
        133_291_666_667,
        T0_NS + 5_000,
    )


async def test_one_row_per_index_per_batch_from_the_latest_prices() -> None:
    pool, quotes = FakePool(), FakeQuotes()
    sink = make_sink(pool, quotes)
    sink.write([tick("AAA", "100", T0_NS, 1), tick("BBB", "50", T0_NS, 2), tick("CCC", "200", T0_NS, 3)])
    await sink.flush()
    # One batch moves AAA twice and CCC once; a late AAA tick (older time) is ignored.
    sink.write(
        [
            tick("AAA", "105", T0_NS + 10_000, 4),
            tick("AAA", "110", T0_NS + 20_000, 6),
            tick("AAA", "1", T0_NS + 15_000, 9),
            tick("CCC", "230", T0_NS + 12_000, 5),
        ]
    )
    assert await sink.flush() == 2
    pw, ew = pool.inserted[-2:]
    assert pw == (us(T0_NS + 20_000), "PW3", Decimal("130.000000000"), 3, "price_weighted")  # (110+50+230)/3
    assert ew == (us(T0_NS + 20_000), "EW3", Decimal("1083.333333333"), 3, "equal_weight")  # (1.1+1+1.15)/3 x 1000
    # A batch that moves nothing writes nothing (a replayed tick is no move).
    sink.write([tick("AAA", "110", T0_NS + 20_000, 6), tick("ZZZ", "5", T0_NS + 30_000, 1)])
    assert await sink.flush() == 0


async def test_row_times_strictly_increase_per_index() -> None:
    pool, quotes = FakePool(), FakeQuotes()
    sink = make_sink(pool, quotes, PRICE_WEIGHTED)
    sink.write([tick("AAA", "1", T0_NS + 50_000, 1), tick("BBB", "2", T0_NS, 2), tick("CCC", "3", T0_NS, 3)])
    await sink.flush()
    # BBB moves, but not past AAA's time: the value changed, so the row gets its own time.
    sink.write([tick("BBB", "5", T0_NS + 1_000, 4)])
    await sink.flush()
    times = [r[0] for r in pool.inserted]
    assert times == [us(T0_NS + 50_000), us(T0_NS + 51_000)]
    assert [q.ts_ns for q in quotes.applied] == [T0_NS + 50_000, T0_NS + 51_000]
    assert [r[2] for r in pool.inserted] == [Decimal(2), Decimal(3)]


async def test_seed_continues_from_stored_prices_and_the_last_row() -> None:
    stored = [
        {"symbol": "AAA", "time": us(T0_NS), "source_seq": 1, "price": Decimal("100")},
        {"symbol": "BBB", "time": us(T0_NS), "source_seq": 2, "price": Decimal("50")},
    ]
    last = [{"index_name": "PW3", "time": us(T0_NS + 90_000)}]
    pool, quotes = FakePool(stored, last), FakeQuotes()
    sink = make_sink(pool, quotes, PRICE_WEIGHTED)
    assert await sink.seed() == 2
    # The stored tick read again from Kafka (same µs, same seq) is not a move.
    sink.write([tick("AAA", "100", T0_NS + 999, 1)])
    assert await sink.flush() == 0
    sink.write([tick("CCC", "150", T0_NS + 3_000, 3)])
    assert await sink.flush() == 1
    assert pool.inserted == [(us(T0_NS + 91_000), "PW3", Decimal("100.000000000"), 3, "price_weighted")]


async def test_a_discarded_batch_leaves_prices_alone_and_a_failed_insert_is_retried_as_is() -> None:
    pool, quotes = FakePool(), FakeQuotes()
    sink = make_sink(pool, quotes, PRICE_WEIGHTED)
    sink.write([tick("AAA", "1", T0_NS, 1), tick("BBB", "2", T0_NS, 2), tick("CCC", "3", T0_NS, 3)])
    sink.discard()  # fenced: the batch will be read again
    assert await sink.flush() == 0
    assert sink.prices == {}

    sink.write([tick("AAA", "1", T0_NS, 1), tick("BBB", "2", T0_NS, 2), tick("CCC", "3", T0_NS, 3)])
    pool.fail_next_insert = True
    with pytest.raises(RetryableError):
        await sink.flush()
    assert quotes.applied == []
    assert await sink.flush() == 1  # the same row, computed once
    assert pool.inserted == [(us(T0_NS), "PW3", Decimal("2.000000000"), 3, "price_weighted")]
    assert len(quotes.applied) == 1
