"""The portfolio API against the real databases and Redis (integration)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal as D
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexanest.pipeline.settings import Settings
from nexanest.services.portfolio import ledger
from nexanest.services.portfolio.ledger import Position
from tests.services.portfolio.conftest import Service, running_service, service_settings

pytestmark = pytest.mark.integration


def without_instance(response: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    """A problem response as a client can tell it apart: status, media type, body
    (the ``instance`` names the path asked for, so it is left out)."""
    body = dict(response.json())
    body.pop("instance", None)
    return response.status_code, response.headers["content-type"], body


async def test_a_portfolio_is_created_listed_read_and_deleted(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    response = await service.http.post(
        "/portfolios", json={"name": "Long term", "currency": "EUR"}, headers=service.auth(alice)
    )
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"/portfolios/{created['id']}"
    assert (created["name"], created["currency"], created["cash"]) == ("Long term", "EUR", "0")
    listed = await service.http.get("/portfolios", headers=service.auth(alice))
    assert [p["id"] for p in listed.json()] == [created["id"]]
    one = await service.http.get(f"/portfolios/{created['id']}", headers=service.auth(alice))
    assert one.json() == created
    twin = await service.http.post("/portfolios", json={"name": "Long term"}, headers=service.auth(alice))
    assert twin.status_code == 409
    assert twin.headers["content-type"] == "application/problem+json"
    deleted = await service.http.delete(f"/portfolios/{created['id']}", headers=service.auth(alice))
    assert deleted.status_code == 204
    gone = await service.http.get(f"/portfolios/{created['id']}", headers=service.auth(alice))
    assert gone.status_code == 404


async def test_no_token_no_portfolio(service: Service) -> None:
    response = await service.http.get("/portfolios")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_user_may_have_only_so_many_portfolios(
    isolated: Settings, quotes_redis: redis.Redis, users: list[uuid.UUID]
) -> None:
    async with running_service(service_settings(isolated, portfolio_max_per_user=2), quotes_redis) as service:
        answers = await asyncio.gather(
            *(
                service.http.post("/portfolios", json={"name": f"p{i}"}, headers=service.auth(users[0]))
                for i in range(5)
            )
        )
        assert sorted(a.status_code for a in answers) == [201, 201, 409, 409, 409]
        # Another user's count is their own.
        assert (
            await service.http.post("/portfolios", json={"name": "p"}, headers=service.auth(users[1]))
        ).status_code == 201


async def test_another_users_portfolio_answers_exactly_as_one_that_does_not_exist(
    service: Service, users: list[uuid.UUID]
) -> None:
    """Bob asks for Alice's portfolio, and for one nobody has, in every way the API
    allows; each pair of answers is the same, and Alice's data is untouched."""
    alice, bob = users
    theirs = await service.create(alice)
    assert (await service.book(alice, theirs, kind="deposit", amount="1000")).status_code == 201
    assert (await service.book(alice, theirs, kind="buy", symbol="AAA", quantity="2", price="10")).status_code == 201
    await service.quote("AAA", "11")
    before = {
        path: (await service.http.get(f"/portfolios/{theirs}{path}", headers=service.auth(alice))).json()
        for path in ("", "/holdings", "/transactions")
    }
    nobody = str(uuid.uuid4())
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "", None),
        ("GET", "/holdings", None),
        ("GET", "/transactions", None),
        ("GET", "/valuation", None),
        ("GET", "/history", None),
        ("POST", "/transactions", {"kind": "deposit", "amount": "5"}),
        ("POST", "/transactions", {"kind": "sell", "symbol": "AAA", "quantity": "1", "price": "1"}),
        ("POST", "/transactions", {"kind": "withdraw", "amount": "1"}),
        ("DELETE", "", None),
    ]
    for method, path, body in requests:
        answers = [
            await service.http.request(method, f"/portfolios/{pid}{path}", json=body, headers=service.auth(bob))
            for pid in (theirs, nobody)
        ]
        assert answers[0].status_code == 404, (method, path)
        assert without_instance(answers[0]) == without_instance(answers[1]), (method, path)
    assert (await service.http.get("/portfolios", headers=service.auth(bob))).json() == []
    after = {
        path: (await service.http.get(f"/portfolios/{theirs}{path}", headers=service.auth(alice))).json()
        for path in ("", "/holdings", "/transactions")
    }
    assert after == before


async def test_sells_beyond_the_holding_and_withdrawals_beyond_cash_are_refused(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice = users[0]
    pid = await service.create(alice)
    refused = await service.book(alice, pid, kind="buy", symbol="AAA", quantity="1", price="10")
    assert refused.status_code == 409  # no cash yet
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await service.book(alice, pid, kind="deposit", amount="100")).status_code == 201
    assert (
        await service.book(alice, pid, kind="buy", symbol="AAA", quantity="3", price="20", fees="1")
    ).status_code == 201
    sell = await service.book(alice, pid, kind="sell", symbol="AAA", quantity="3.000000001", price="20")
    assert sell.status_code == 409
    assert sell.json()["status"] == 409
    assert "holds 3" in sell.json()["detail"]
    assert (await service.book(alice, pid, kind="sell", symbol="BBB", quantity="1", price="1")).status_code == 409
    withdraw = await service.book(alice, pid, kind="withdraw", amount="39.000000001")
    assert withdraw.status_code == 409
    assert (await service.book(alice, pid, kind="withdraw", amount="39")).status_code == 201
    portfolio = (await service.http.get(f"/portfolios/{pid}", headers=service.auth(alice))).json()
    assert portfolio["cash"] == "0"
    holdings = (await service.http.get(f"/portfolios/{pid}/holdings", headers=service.auth(alice))).json()
    assert holdings == [
        {
            "symbol": "AAA",
            "quantity": "3",
            "cost_basis": "61",
            "average_cost": "20.333333333",
            "realised": "0",
            "updated_at": holdings[0]["updated_at"],
        }
    ]


async def test_concurrent_sells_never_sell_more_than_is_held(service: Service, users: list[uuid.UUID]) -> None:
    """Eight sells of 3 race for a holding of 10: three are booked, five refused, 1 is left."""
    alice = users[0]
    pid = await service.create(alice)
    await service.book(alice, pid, kind="deposit", amount="1000")
    await service.book(alice, pid, kind="buy", symbol="AAA", quantity="10", price="10")
    answers = await asyncio.gather(
        *(service.book(alice, pid, kind="sell", symbol="AAA", quantity="3", price="12") for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 5
    holdings = (await service.http.get(f"/portfolios/{pid}/holdings", headers=service.auth(alice))).json()
    assert (holdings[0]["quantity"], holdings[0]["cost_basis"], holdings[0]["realised"]) == ("1", "10", "18")
    portfolio = (await service.http.get(f"/portfolios/{pid}", headers=service.auth(alice))).json()
    assert portfolio["cash"] == str(1000 - 100 + 3 * 36)


async def test_two_concurrent_sells_of_the_whole_holding_book_one(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    pid = await service.create(alice)
    await service.book(alice, pid, kind="deposit", amount="100")
    await service.book(alice, pid, kind="buy", symbol="AAA", quantity="5", price="10")
    first, second = await asyncio.gather(
        service.book(alice, pid, kind="sell", symbol="AAA", quantity="5", price="11"),
        service.book(alice, pid, kind="sell", symbol="AAA", quantity="5", price="11"),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]


async def test_transactions_are_listed_newest_first_a_page_at_a_time(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    pid = await service.create(alice)
    for amount in ("1", "2", "3", "4", "5"):
        assert (await service.book(alice, pid, kind="deposit", amount=amount)).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2"} if cursor is None else {"limit": "2", "cursor": cursor}
        page = (
            await service.http.get(f"/portfolios/{pid}/transactions", params=params, headers=service.auth(alice))
        ).json()
        seen += [t["amount"] for t in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["5", "4", "3", "2", "1"]
    assert pages == 3
    bad = await service.http.get(f"/portfolios/{pid}/transactions?cursor=abc", headers=service.auth(alice))
    assert bad.status_code == 422


async def test_a_sell_books_its_realised_pnl(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    pid = await service.create(alice)
    await service.book(alice, pid, kind="deposit", amount="1000")
    await service.book(alice, pid, kind="buy", symbol="AAA", quantity="4", price="10", fees="2")
    sell = (await service.book(alice, pid, kind="sell", symbol="AAA", quantity="1", price="15", fees="0.5")).json()
    # 15 - 0.5 - 42 / 4
    assert (sell["kind"], sell["amount"], sell["fees"], sell["realised_pnl"], sell["seq"]) == (
        "sell",
        "15",
        "0.5",
        "4",
        3,
    )
    assert isinstance(sell["quantity"], str)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "buy", "symbol": "AAA", "quantity": 1, "price": "1"},
        {"kind": "buy", "symbol": "AAA", "quantity": "1", "price": 1.5},
        {"kind": "deposit", "amount": "1", "executed_at": "2999-01-01T00:00:00Z"},
        {"kind": "deposit", "amount": "1", "executed_at": "0001-01-01T00:00:00+01:00"},
        {"kind": "deposit", "amount": "1", "executed_at": "2026-01-01T00:00:00"},
        {"kind": "deposit", "amount": "999999999999999.999999999"},  # 15 digits are fine, ...
    ],
)
async def test_bad_transactions_answer_422(service: Service, users: list[uuid.UUID], body: dict[str, Any]) -> None:
    pid = await service.create(users[0])
    response = await service.book(users[0], pid, **body)
    if body.get("amount") == "999999999999999.999999999":
        assert response.status_code == 201  # ... and stored exactly
        assert response.json()["amount"] == "999999999999999.999999999"
        return
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_valuation_equals_a_hand_computation_from_the_quotes(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    pid = await service.create(alice)
    await service.book(alice, pid, kind="deposit", amount="10000")
    await service.book(alice, pid, kind="buy", symbol="AAA", quantity="10", price="100", fees="5")
    await service.book(alice, pid, kind="buy", symbol="BBB", quantity="2.5", price="40")
    await service.book(alice, pid, kind="sell", symbol="AAA", quantity="4", price="110", fees="1")
    await service.quote("AAA", "123.456789012")
    await service.quote("BBB", "39.5")
    body = (await service.http.get(f"/portfolios/{pid}/valuation", headers=service.auth(alice))).json()

    # By hand: AAA bought 10 for 1005, sold 4 at 110 less 1: cost out 4 * 100.5 = 402,
    # realised 440 - 1 - 402 = 37; left 6 costing 603, worth 6 * 123.456789012.
    # BBB: 2.5 costing 100, worth 2.5 * 39.5 = 98.75. Cash 10000 - 1005 - 100 + 439.
    aaa_value = D(6) * D("123.456789012")
    assert aaa_value == D("740.740734072")
    by_symbol = {h["symbol"]: h for h in body["holdings"]}
    assert by_symbol["AAA"] | {"quote_age_s": None} == {
        "symbol": "AAA",
        "quantity": "6",
        "cost_basis": "603",
        "realised": "37",
        "quote_status": "fresh",
        "price": "123.456789012",
        "quote_age_s": None,
        "market_value": "740.740734072",
        "unrealised": "137.740734072",
    }
    assert by_symbol["BBB"]["market_value"] == "98.75"
    assert by_symbol["BBB"]["unrealised"] == "-1.25"
    assert 0 <= by_symbol["AAA"]["quote_age_s"] < 60
    cash = D(10000) - D(1005) - D(100) + D(439)
    assert body["totals"] == {
        "market_value": str(aaa_value + D("98.75")),
        "cost_basis": "703",
        "unrealised": str(aaa_value + D("98.75") - D(703)),
        "realised": "37",
        "cash": str(cash),
        "total_value": str(aaa_value + D("98.75") + cash),
    }
    assert body["complete"] is True
    assert body["stale_symbols"] == []


async def test_a_stale_quote_is_flagged_with_its_age_and_never_used(service: Service, users: list[uuid.UUID]) -> None:
    alice = users[0]
    pid = await service.create(alice)
    await service.book(alice, pid, kind="deposit", amount="1000")
    await service.book(alice, pid, kind="buy", symbol="AAA", quantity="1", price="100")
    await service.book(alice, pid, kind="buy", symbol="OLD", quantity="1", price="100")
    await service.book(alice, pid, kind="buy", symbol="NONE", quantity="1", price="100")
    await service.quote("AAA", "101")
    await service.quote("OLD", "500", age_s=service.settings.services.portfolio_quote_max_age_s + 30)
    body = (await service.http.get(f"/portfolios/{pid}/valuation", headers=service.auth(alice))).json()
    by_symbol = {h["symbol"]: h for h in body["holdings"]}
    old = by_symbol["OLD"]
    assert (old["quote_status"], old["price"], old["market_value"], old["unrealised"]) == ("stale", "500", None, None)
    assert 90 <= old["quote_age_s"] < 100
    assert by_symbol["NONE"]["quote_status"] == "missing"
    assert by_symbol["AAA"]["market_value"] == "101"
    assert body["complete"] is False
    assert body["stale_symbols"] == ["NONE", "OLD"]
    assert body["totals"]["market_value"] is None
    assert body["totals"]["total_value"] is None
    assert body["totals"]["cost_basis"] == "300"


async def test_the_valuation_is_cached_until_a_transaction_changes_the_portfolio(
    isolated: Settings, quotes_redis: redis.Redis, users: list[uuid.UUID]
) -> None:
    settings = service_settings(isolated, portfolio_valuation_cache_s=120.0)
    async with running_service(settings, quotes_redis) as service:
        alice, bob = users
        pid = await service.create(alice)
        await service.book(alice, pid, kind="deposit", amount="100")
        await service.book(alice, pid, kind="buy", symbol="AAA", quantity="1", price="10")
        await service.quote("AAA", "20")
        url = f"/portfolios/{pid}/valuation"
        first = (await service.http.get(url, headers=service.auth(alice))).json()
        await service.quote("AAA", "30")
        cached = (await service.http.get(url, headers=service.auth(alice))).json()
        assert cached == first  # as_of included: the very same answer
        assert (await service.http.get(url, headers=service.auth(bob))).status_code == 404  # never from the cache
        await service.book(alice, pid, kind="buy", symbol="AAA", quantity="1", price="10")
        fresh = (await service.http.get(url, headers=service.auth(alice))).json()
        assert fresh["totals"]["market_value"] == "60"
        assert fresh["as_of"] != first["as_of"]
        await service.http.delete(f"/portfolios/{pid}", headers=service.auth(alice))
        assert (await service.http.get(url, headers=service.auth(alice))).status_code == 404


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 422),  # backwards
        ("from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", 422),  # empty
        ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=1m", 422),  # millions of buckets
        ("from=2026-01-01T00:00:00&to=2026-01-02T00:00:00Z", 422),  # no offset
        ("from=0001-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&interval=1d", 422),
        ("from=2026-01-01T00:00:00Z&to=9999-12-31T23:59:59-10:00&interval=1d", 422),
        ("interval=2m", 422),
        ("from=yesterday", 422),
        ("from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&interval=1h", 200),
    ],
)
async def test_history_refuses_bad_ranges(service: Service, users: list[uuid.UUID], query: str, status: int) -> None:
    pid = await service.create(users[0])
    response = await service.http.get(f"/portfolios/{pid}/history?{query}", headers=service.auth(users[0]))
    assert response.status_code == status, response.text
    if status != 200:
        assert response.headers["content-type"] == "application/problem+json"
    else:
        assert response.json()["points"] == []
        assert response.json()["from"] == "2026-01-01T00:00:00Z"


async def test_the_openapi_document_declares_strings_for_decimals(service: Service) -> None:
    document = (await service.http.get("/openapi.json")).json()
    trade = document["components"]["schemas"]["TradeIn"]["properties"]
    assert trade["quantity"]["type"] == "string"
    assert "/portfolios/{portfolio_id}/valuation" in document["paths"]
    assert (await service.http.get("/readyz")).json()["status"] == "ready"


operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["deposit", "withdraw"]), st.sampled_from(["0.5", "10", "250", "1000"])),
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.sampled_from(["AAA", "BBB"]),
            st.sampled_from(["0.1", "1", "3", "7.25"]),
            st.sampled_from(["0.01", "9.99", "100"]),
            st.sampled_from(["0", "0.5"]),
        ),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
async def test_the_books_equal_the_ledger_replayed_by_hand(
    service: Service, users: list[uuid.UUID], ops: list[tuple[str, ...]]
) -> None:
    """Whatever sequence a client sends, the service books exactly what the pure
    ledger accepts, refuses (409) what it refuses, and ends in the same state."""
    alice = users[0]
    pid = await service.create(alice, f"prop-{uuid.uuid4().hex[:8]}")
    cash, held = D(0), {"AAA": Position(), "BBB": Position()}
    for op in ops:
        if op[0] in ("deposit", "withdraw"):
            kind, amount = op
            response = await service.book(alice, pid, kind=kind, amount=amount)
            step = ledger.deposit if kind == "deposit" else ledger.withdraw
            try:
                cash = step(cash, D(amount)).cash
            except ledger.Refused:
                assert response.status_code == 409
            else:
                assert response.status_code == 201
        else:
            kind, symbol, quantity, price, fees = op
            response = await service.book(
                alice, pid, kind=kind, symbol=symbol, quantity=quantity, price=price, fees=fees
            )
            trade = ledger.buy if kind == "buy" else ledger.sell
            try:
                booked = trade(cash, held[symbol], D(quantity), D(price), D(fees))
            except ledger.Refused:
                assert response.status_code == 409
            else:
                assert response.status_code == 201
                assert booked.position is not None
                cash, held[symbol] = booked.cash, booked.position
    portfolio = (await service.http.get(f"/portfolios/{pid}", headers=service.auth(alice))).json()
    assert D(portfolio["cash"]) == cash
    holdings = (await service.http.get(f"/portfolios/{pid}/holdings", headers=service.auth(alice))).json()
    for h in holdings:
        assert (D(h["quantity"]), D(h["cost_basis"]), D(h["realised"])) == (
            held[h["symbol"]].quantity,
            held[h["symbol"]].cost_basis,
            held[h["symbol"]].realised,
        )
