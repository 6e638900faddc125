"""Webhook URLs on the service's own network are refused (unit, and the API and
worker with the setting off, integration)."""

from __future__ import annotations

import uuid

import pytest

from nexanest.pipeline.settings import Settings
from nexanest.services.notifications.destinations import refused_literal, refused_resolved
from nexanest.services.notifications.jobs import Fanout, encode_job
from nexanest.services.notifications.queue import JobQueue
from tests.services.notifications.conftest import Receiver, auth, notification_settings, running_service
from tests.services.notifications.test_worker import fanout, wait_for, working


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://localhost/hook",
        "http://api.localhost/",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://[fe80::1]/",
    ],
)
def test_local_addresses_are_refused(url: str) -> None:
    assert refused_literal(url) is not None


@pytest.mark.parametrize("url", ["https://example.com/hook", "https://93.184.216.34/x", "http://[2606:4700::1]/"])
def test_public_ones_are_not(url: str) -> None:
    assert refused_literal(url) is None


async def test_a_name_is_judged_by_what_it_resolves_to() -> None:
    assert await refused_resolved("http://localhost./x") is not None
    assert await refused_resolved("http://127.0.0.1/x") is not None
    assert await refused_resolved("http://no-such-host.invalid/x") is None  # left to the HTTP client


@pytest.mark.integration
async def test_with_private_addresses_off_the_api_refuses_and_the_worker_abandons(
    isolated: Settings, test_id: str, users: list[uuid.UUID], receiver: Receiver
) -> None:

    alice, _ = users
    allowed = notification_settings(isolated, test_id)
    async with running_service(allowed) as service:  # made while allowed ...
        made = await service.http.post("/webhooks", json={"url": receiver.url}, headers=auth(alice))
        assert made.status_code == 201
    strict = allowed.model_copy(
        update={"notifications": allowed.notifications.model_copy(update={"webhook_allow_private": False})}
    )
    async with running_service(strict) as service:  # ... and no longer
        refused = await service.http.post("/webhooks", json={"url": receiver.url}, headers=auth(alice))
        assert refused.status_code == 422
        assert "private" in refused.json()["detail"]
        await JobQueue(service.queue_redis, strict.notifications.key_prefix).push(encode_job(Fanout(fanout(alice))))
        hook_id = made.json()["id"]

        async def abandoned() -> bool:
            rows = (await service.http.get(f"/webhooks/{hook_id}/deliveries", headers=auth(alice))).json()
            return any(r["status"] == "abandoned" for r in rows)

        async with working(strict, service):
            await wait_for(abandoned, "the delivery abandoned")
        assert receiver.received == []
