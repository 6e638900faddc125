"""Jobs and their derived ids (unit): a repeated firing is the same notice."""

from __future__ import annotations

import uuid

import pytest
from msgspec import DecodeError

from nexanest.services.notifications.jobs import (
    Delivery,
    Fanout,
    Notice,
    alert_notification_id,
    decode_job,
    delivery_id,
    encode_job,
    webhook_id,
)


def notice() -> Notice:
    return Notice(uuid.uuid4(), uuid.uuid4(), "alert_fired", "AAA crossed above 10", "body", 1, {"price": "10"})


def test_jobs_round_trip() -> None:
    n = notice()
    for job in (Fanout(n), Delivery(delivery_id(n.notification_id, "webhook", n.user_id), n, "webhook", n.user_id, 3)):
        assert decode_job(encode_job(job)) == job


def test_ids_are_derived_from_their_cause() -> None:
    alert = uuid.uuid4()
    assert alert_notification_id(alert, 1) == alert_notification_id(alert, 1)
    assert alert_notification_id(alert, 1) != alert_notification_id(alert, 2)
    n = uuid.uuid4()
    assert delivery_id(n, "inbox", None) != delivery_id(n, "webhook", uuid.uuid4())
    assert webhook_id(n) == f"msg_{n.hex}"


def test_bytes_that_are_no_job_are_refused() -> None:
    with pytest.raises(DecodeError):
        decode_job(b"{not json")
