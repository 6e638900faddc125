from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexanest.pipeline.settings import ValidationSettings
from nexanest.pipeline.validation import REASONS, TickValidator
from nexanest.schemas.ticks import Tick, encode_tick

NOW_NS = 1_764_000_000_000_000_000
ASK_E9 = 187_260_000_000
GOOD = Tick(
    symbol="AAPL",
    exchange="XNAS",
    price_e9=187_250_000_000,
    size_e9=100 * 10**9,
    ts_ns=NOW_NS - 1_000_000,
    source="t",
    seq=1,
    bid_e9=187_240_000_000,
    ask_e9=ASK_E9,
)


def reason_of(checked: Tick | tuple[str, str]) -> str:
    """The reason a tick was refused (a test that expects a refusal fails on a pass)."""
    assert isinstance(checked, tuple), f"accepted: {checked}"
    return checked[0]


@pytest.fixture
def validator() -> TickValidator:
    return TickValidator(ValidationSettings())


def test_good_tick_passes(validator: TickValidator) -> None:
    assert validator.check(encode_tick(GOOD), NOW_NS) == GOOD


CASES: list[tuple[bytes | None, str]] = [
    (None, "undecodable"),
    (b"\x93garbage", "schema_violation"),
    (b"\xc1", "undecodable"),
    (msgspec.msgpack.encode({"symbol": "AAPL", "price_e9": float("nan")}), "schema_violation"),
    (b"x" * 5000, "oversized"),
    (encode_tick(msgspec.structs.replace(GOOD, v=2)), "unsupported_version"),
    (encode_tick(msgspec.structs.replace(GOOD, symbol="aapl")), "bad_symbol"),
    (encode_tick(msgspec.structs.replace(GOOD, symbol="")), "bad_symbol"),
    (encode_tick(msgspec.structs.replace(GOOD, symbol="A B")), "bad_symbol"),
    (encode_tick(msgspec.structs.replace(GOOD, price_e9=0)), "bad_price"),
    (encode_tick(msgspec.structs.replace(GOOD, price_e9=-5)), "bad_price"),
    (encode_tick(msgspec.structs.replace(GOOD, size_e9=-1)), "bad_size"),
    (encode_tick(msgspec.structs.replace(GOOD, bid_e9=ASK_E9 + 1)), "crossed_quote"),
    (encode_tick(msgspec.structs.replace(GOOD, bid_e9=0)), "crossed_quote"),
    (encode_tick(msgspec.structs.replace(GOOD, ts_ns=NOW_NS + 60 * 10**9)), "future_timestamp"),
    (encode_tick(msgspec.structs.replace(GOOD, ts_ns=NOW_NS - 8 * 86400 * 10**9)), "stale_timestamp"),
    # What the write path cannot store: each one stopped the consumer before.
    (encode_tick(msgspec.structs.replace(GOOD, seq=2**63)), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, seq=2**64 - 1)), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, seq=-1)), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, ts_ns=2**63)), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, exchange="X" * 65)), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, exchange="")), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, source="s" * 129)), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, symbol="A" * 33)), "schema_violation"),
    (encode_tick(msgspec.structs.replace(GOOD, exchange="XN\x00S")), "bad_text"),
    (encode_tick(msgspec.structs.replace(GOOD, source="t\x00")), "bad_text"),
    (encode_tick(GOOD).replace(b"\xa4XNAS", b"\xa4\xff\xfeAS"), "undecodable"),  # not UTF-8
    (encode_tick(GOOD).replace(b"\xa4XNAS", b"\xa4\xed\xa0\x80S"), "undecodable"),  # a surrogate
    (b"\x8b" + encode_tick(GOOD)[1:] + b"\xa1z" + b"\x91" * 3000 + b"\xc0", "undecodable"),  # nested too deep
]


@pytest.mark.parametrize(("raw", "reason"), CASES)
def test_each_rule_names_its_reason(validator: TickValidator, raw: bytes | None, reason: str) -> None:
    result = validator.check(raw, NOW_NS)
    assert isinstance(result, tuple)
    assert result[0] == reason
    assert reason in REASONS


def test_rules_follow_settings() -> None:
    strict = TickValidator(ValidationSettings(max_future_s=0, symbol_pattern=r"^[A-Z]{1,5}$"))
    ahead = msgspec.structs.replace(GOOD, ts_ns=NOW_NS + 1)
    assert reason_of(strict.check_tick(ahead, NOW_NS)) == "future_timestamp"
    assert reason_of(strict.check_tick(msgspec.structs.replace(GOOD, symbol="BTC-USD"), NOW_NS)) == "bad_symbol"


def test_known_symbols_when_configured() -> None:
    listed = TickValidator(ValidationSettings(known_symbols=["AAPL"]))
    assert listed.check_tick(GOOD, NOW_NS) == GOOD
    assert reason_of(listed.check_tick(msgspec.structs.replace(GOOD, symbol="MSFT"), NOW_NS)) == "unknown_symbol"


def test_one_sided_quote_is_accepted(validator: TickValidator) -> None:
    tick = msgspec.structs.replace(GOOD, bid_e9=None)
    assert validator.check_tick(tick, NOW_NS) == tick


def test_a_remembered_good_symbol_does_not_let_a_bad_one_through() -> None:
    validator = TickValidator(ValidationSettings(known_symbols=["AAPL"]))
    assert validator.check_tick(GOOD, NOW_NS) == GOOD
    assert validator.check_tick(GOOD, NOW_NS) == GOOD  # from the remembered set
    assert reason_of(validator.check_tick(msgspec.structs.replace(GOOD, symbol="MSFT"), NOW_NS)) == "unknown_symbol"
    assert reason_of(validator.check_tick(msgspec.structs.replace(GOOD, symbol="aapl"), NOW_NS)) == "bad_symbol"


def test_the_remembered_symbols_stay_bounded() -> None:
    validator = TickValidator(ValidationSettings())
    for i in range(TickValidator.MAX_REMEMBERED_SYMBOLS + 10):
        assert isinstance(validator.check_tick(msgspec.structs.replace(GOOD, symbol=f"S{i}"), NOW_NS), Tick)
    assert len(validator._good_symbols) <= TickValidator.MAX_REMEMBERED_SYMBOLS


def test_a_nul_in_a_symbol_is_refused_whatever_the_pattern_allows() -> None:
    permissive = TickValidator(ValidationSettings(symbol_pattern=r"(?s).+"))
    assert reason_of(permissive.check_tick(msgspec.structs.replace(GOOD, symbol="A\x00"), NOW_NS)) == "bad_symbol"


def test_a_remembered_exchange_does_not_let_a_nul_through(validator: TickValidator) -> None:
    assert validator.check_tick(GOOD, NOW_NS) == GOOD
    assert reason_of(validator.check_tick(msgspec.structs.replace(GOOD, source="t\x00"), NOW_NS)) == "bad_text"


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("v", "symbol", "exchange", "price_e9", "size_e9", "bid_e9", "ask_e9", "ts_ns", "source", "seq")


@given(
    changes=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), msgpack_values | st.just(...), max_size=4),
    tail=st.binary(max_size=8),
)
@settings(max_examples=500)
def test_any_bytes_give_a_tick_or_a_reason(changes: dict[str, object], tail: bytes) -> None:
    """Fields of a good tick replaced, removed (``...``) or added, with any
    MessagePack value, and sometimes trailing bytes: never an exception."""
    raw = _changed(changes) + tail
    result = TickValidator(ValidationSettings()).check(raw, NOW_NS)
    assert isinstance(result, Tick) or result[0] in REASONS


def test_the_backfill_validator_drops_only_the_stale_rule() -> None:
    backfill = TickValidator(ValidationSettings(), stale=False)
    year_old = msgspec.structs.replace(GOOD, ts_ns=NOW_NS - 365 * 86400 * 10**9)
    assert backfill.check(encode_tick(year_old), NOW_NS) == year_old
    assert TickValidator(ValidationSettings()).check(encode_tick(year_old), NOW_NS)[0] == "stale_timestamp"  # type: ignore[index]
    future = msgspec.structs.replace(GOOD, ts_ns=NOW_NS + 3600 * 10**9)
    assert backfill.check(encode_tick(future), NOW_NS)[0] == "future_timestamp"  # type: ignore[index]
    assert backfill.check(encode_tick(msgspec.structs.replace(year_old, price_e9=0)), NOW_NS)[0] == "bad_price"  # type: ignore[index]


def test_check_many_gives_check_s_verdict_on_every_value() -> None:
    """Every rule's example among good ticks (one of a symbol not seen before),
    in one call: the same ticks in order, and each refusal at its index with
    ``check``'s reason and detail."""
    new_symbol = msgspec.structs.replace(GOOD, symbol="MSFT", seq=2)
    values: list[bytes | None] = [encode_tick(GOOD)]
    for raw, _ in CASES:
        values += [raw, encode_tick(GOOD)]
    values.append(encode_tick(new_symbol))
    for stale in (True, False):
        ticks, refused = TickValidator(ValidationSettings(), stale=stale).check_many(values, NOW_NS)
        one_by_one = [TickValidator(ValidationSettings(), stale=stale).check(v, NOW_NS) for v in values]
        assert ticks == [r for r in one_by_one if isinstance(r, Tick)]
        assert refused == [(i, *r) for i, r in enumerate(one_by_one) if isinstance(r, tuple)]
        assert ticks[-1] == new_symbol
        assert len(refused) == len(CASES) - (0 if stale else 1)  # the backfill keeps the stale one


@given(
    values=st.lists(
        st.builds(
            lambda changes, tail: _changed(changes) + tail,
            st.dictionaries(st.sampled_from(FIELDS), msgpack_values | st.just(...), max_size=2),
            st.binary(max_size=2),
        )
        | st.binary(max_size=40)
        | st.none(),
        max_size=12,
    )
)
@settings(max_examples=300)
def test_check_many_agrees_with_check_on_any_bytes(values: list[bytes | None]) -> None:
    ticks, refused = TickValidator(ValidationSettings()).check_many(values, NOW_NS)
    checker = TickValidator(ValidationSettings())
    one_by_one = [checker.check(v, NOW_NS) for v in values]
    assert ticks == [r for r in one_by_one if isinstance(r, Tick)]
    assert refused == [(i, *r) for i, r in enumerate(one_by_one) if isinstance(r, tuple)]


def _changed(changes: dict[str, object]) -> bytes:
    fields = msgspec.structs.asdict(GOOD)
    for key, value in changes.items():
        if value is ...:
            fields.pop(key, None)
        else:
            fields[key] = value
    return msgspec.msgpack.encode(fields)
