"""The notifications API in process against notifications_test (integration):
alerts, the inbox, webhook endpoints, operational alert subscriptions; bad input
answers a problem, another user's rows answer 404."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from nexanest.services.notifications import repository
from nexanest.services.notifications.jobs import Notice
from nexanest.services.notifications.sealing import SecretBox
from nexanest.services.notifications.signing import secret_key
from nexanest.services.rls import acting_as
from tests.services.notifications.conftest import Service, auth

pytestmark = pytest.mark.integration


async def test_alerts_crud(service: Service, users: list[uuid.UUID]) -> None:
    alice, _ = users
    created = await service.alert(alice, symbol="AAA", kind="crosses_above", threshold="100.50", hysteresis="0.5")
    assert created["threshold"] == "100.5"
    assert created["hysteresis"] == "0.5"
    assert created["state"] == "armed"
    assert created["fired_count"] == 0
    assert created["enabled"] is True
    moves = await service.alert(alice, symbol="AAA", kind="moves_pct", threshold="5", hysteresis="1", window_s=300)
    listed = (await service.http.get("/alerts", headers=auth(alice))).json()
    assert [a["id"] for a in listed] == [created["id"], moves["id"]]

    patched = await service.http.patch(
        f"/alerts/{created['id']}", json={"threshold": "90", "enabled": False}, headers=auth(alice)
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["threshold"] == "90"
    assert patched.json()["enabled"] is False
    got = await service.http.get(f"/alerts/{created['id']}", headers=auth(alice))
    assert got.json()["threshold"] == "90"

    assert (await service.http.delete(f"/alerts/{created['id']}", headers=auth(alice))).status_code == 204
    assert (await service.http.get(f"/alerts/{created['id']}", headers=auth(alice))).status_code == 404


async def test_a_crossing_alert_starts_fired_when_the_price_is_past_it(
    service: Service, users: list[uuid.UUID]
) -> None:
    alice, _ = users
    await service.quote("BBB", "105")
    above = await service.alert(alice, symbol="BBB", kind="crosses_above", threshold="100")
    below = await service.alert(alice, symbol="BBB", kind="crosses_below", threshold="100")
    assert above["state"] == "fired"
    assert below["state"] == "armed"
    moved = await service.http.patch(f"/alerts/{above['id']}", json={"threshold": "110"}, headers=auth(alice))
    assert moved.json()["state"] == "armed"


@pytest.mark.parametrize(
    "body",
    [
        {"symbol": "AAA", "kind": "crosses_above", "threshold": 100},  # a JSON number
        {"symbol": "AAA", "kind": "crosses_above", "threshold": "0"},
        {"symbol": "AAA", "kind": "crosses_above", "threshold": "1e3"},
        {"symbol": "aaa", "kind": "crosses_above", "threshold": "1"},
        {"symbol": "AAA", "kind": "moves_pct", "threshold": "5"},  # no window
        {"symbol": "AAA", "kind": "moves_pct", "threshold": "5", "hysteresis": "5", "window_s": 60},
        {"symbol": "AAA", "kind": "crosses_below", "threshold": "5", "window_s": 60},
        {"symbol": "AAA", "kind": "crosses_above", "threshold": "5", "hysteresis": "5"},
        {"symbol": "AAA", "kind": "sideways", "threshold": "5"},
        {"symbol": "AAA", "kind": "crosses_above", "threshold": "5", "owner": "someone"},
    ],
)
async def test_bad_alerts_answer_a_problem(service: Service, users: list[uuid.UUID], body: dict[str, object]) -> None:
    response = await service.http.post("/alerts", json=body, headers=auth(users[0]))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]


async def test_a_patch_that_breaks_the_shape_is_refused(service: Service, users: list[uuid.UUID]) -> None:
    alert = await service.alert(users[0], symbol="AAA", kind="moves_pct", threshold="5", window_s=60)
    response = await service.http.patch(f"/alerts/{alert['id']}", json={"hysteresis": "6"}, headers=auth(users[0]))
    assert response.status_code == 422
    assert "hysteresis" in response.json()["detail"]


async def test_another_users_rows_answer_404(service: Service, users: list[uuid.UUID]) -> None:
    alice, bob = users
    alert = await service.alert(alice, symbol="AAA", kind="crosses_above", threshold="1")
    hook = (await service.http.post("/webhooks", json={"url": "https://example.com/h"}, headers=auth(alice))).json()
    notice = Notice(uuid.uuid4(), alice, "message", "hello", "", time.time_ns())
    async with acting_as(service.pool, alice) as conn:
        assert await repository.insert_notice(conn, notice)
    h = auth(bob)
    assert (await service.http.get(f"/alerts/{alert['id']}", headers=h)).status_code == 404
    assert (await service.http.patch(f"/alerts/{alert['id']}", json={"enabled": False}, headers=h)).status_code == 404
    assert (await service.http.delete(f"/alerts/{alert['id']}", headers=h)).status_code == 404
    assert (await service.http.delete(f"/webhooks/{hook['id']}", headers=h)).status_code == 404
    assert (await service.http.get(f"/webhooks/{hook['id']}/deliveries", headers=h)).status_code == 404
    assert (await service.http.post(f"/notifications/{notice.notification_id}/read", headers=h)).status_code == 404
    assert (await service.http.get("/alerts", headers=h)).json() == []
    assert (await service.http.get("/webhooks", headers=h)).json() == []
    assert (await service.http.get("/notifications", headers=h)).json()["items"] == []
    # ... and all of it is still there for its owner.
    assert (await service.http.get(f"/alerts/{alert['id']}", headers=auth(alice))).json()["enabled"] is True
    assert len((await service.http.get("/webhooks", headers=auth(alice))).json()) == 1
    assert len((await service.http.get("/notifications", headers=auth(alice))).json()["items"]) == 1


async def test_the_inbox_pages_newest_first_and_marks_read_once(service: Service, users: list[uuid.UUID]) -> None:
    alice, _ = users
    base = time.time_ns()
    notices = [Notice(uuid.uuid4(), alice, "message", f"n{i}", "", base + i * 1000) for i in range(5)]
    async with acting_as(service.pool, alice) as conn:
        for notice in notices:
            assert await repository.insert_notice(conn, notice)
        assert not await repository.insert_notice(conn, notices[0])  # once
    seen, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await service.http.get("/notifications", params=params, headers=auth(alice))).json()
        seen += [item["title"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["n4", "n3", "n2", "n1", "n0"]

    first = await service.http.post(f"/notifications/{notices[2].notification_id}/read", headers=auth(alice))
    assert first.status_code == 200
    assert first.json()["read_at"] is not None
    again = await service.http.post(f"/notifications/{notices[2].notification_id}/read", headers=auth(alice))
    assert again.json()["read_at"] == first.json()["read_at"]
    unread = (await service.http.get("/notifications?unread=true", headers=auth(alice))).json()["items"]
    assert [item["title"] for item in unread] == ["n4", "n3", "n1", "n0"]
    bad = await service.http.get("/notifications?cursor=99999999999999999999_" + "0" * 32, headers=auth(alice))
    assert bad.status_code == 422


async def test_a_webhook_secret_is_shown_once_and_stored_sealed(service: Service, users: list[uuid.UUID]) -> None:
    alice, _ = users
    created = await service.http.post(
        "/webhooks", json={"url": "https://example.com/hooks", "description": "mine"}, headers=auth(alice)
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) == 24
    listed = (await service.http.get("/webhooks", headers=auth(alice))).json()
    assert listed == [{k: v for k, v in body.items() if k != "secret"}]
    assert secret not in (await service.http.get("/webhooks", headers=auth(alice))).text

    conn = await asyncpg.connect(service.settings.postgres.notifications_dsn.get_secret_value())  # the owner
    try:
        sealed = await conn.fetchval(
            "SELECT secret_sealed FROM webhook_endpoints WHERE endpoint_id = $1", uuid.UUID(body["id"])
        )
    finally:
        await conn.close()
    assert secret.encode() not in sealed
    assert secret_key(secret) not in sealed
    box = SecretBox.from_settings(service.settings)
    assert box.open(sealed, uuid.UUID(body["id"]), alice) == secret

    for bad in ({"url": "ftp://example.com/x"}, {"url": "not a url"}, {"url": "https://e.com", "description": "a\nb"}):
        assert (await service.http.post("/webhooks", json=bad, headers=auth(alice))).status_code == 422
    assert (await service.http.delete(f"/webhooks/{body['id']}", headers=auth(alice))).status_code == 204
    assert (await service.http.get("/webhooks", headers=auth(alice))).json() == []


async def test_operational_alerts_are_for_admins(service: Service, users: list[uuid.UUID]) -> None:
    alice, root = users
    assert (await service.http.put("/ops-alerts/subscription", headers=auth(alice))).status_code == 403
    assert (await service.http.get("/ops-alerts/subscription", headers=auth(alice))).status_code == 403
    put = await service.http.put("/ops-alerts/subscription", headers=auth(root, "admin"))
    assert put.status_code == 200
    assert put.json()["subscribed"] is True
    assert (await service.http.get("/ops-alerts/subscription", headers=auth(root, "admin"))).json()["subscribed"]
    assert root in await repository.ops_subscriptions(service.pool)
    gone = await service.http.delete("/ops-alerts/subscription", headers=auth(root, "admin"))
    assert gone.json()["subscribed"] is False
    assert root not in await repository.ops_subscriptions(service.pool)


async def test_no_token_answers_401(service: Service) -> None:
    for method, path in (("GET", "/alerts"), ("GET", "/notifications"), ("POST", "/webhooks")):
        response = await service.http.request(method, path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
