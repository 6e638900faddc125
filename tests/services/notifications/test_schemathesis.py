"""schemathesis against ``nexanest serve notifications`` (real database, Redis, the
auth service's sessions, its evaluator and worker running): no server error,
every response as declared.

A second run puts the ids of an existing alert, notification and webhook endpoint
in every ``{alert_id}``, ``{notification_id}`` and ``{webhook_id}``, so that the
routes behind the 404s are fuzzed too (generated ids find nothing)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from nexanest.pipeline.settings import Settings
from tests.services.fuzzing import answered_about, assert_clean, bearer_of_a_new_user, fuzz
from tests.services.served import served

pytestmark = pytest.mark.integration


def test_notifications_has_no_server_error_and_keeps_its_schema(
    migrated: Settings, test_id: str, tmp_path: Path
) -> None:
    auth_log, log = tmp_path / "auth.log", tmp_path / "notifications.log"
    env = {"NEXANEST_NOTIFICATIONS__KEY_PREFIX": f"test.{test_id}:notifications:"}
    with served("auth", migrated, auth_log) as auth_url:
        token = bearer_of_a_new_user(auth_url)
        with served("notifications", migrated, log, env=env) as url:
            assert_clean(fuzz(url, token, tmp_path / "generated.toml"), "notifications", log)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
                alert = http.post("/alerts", json={"symbol": "FUZZ", "kind": "crosses_above", "threshold": "10"})
                assert alert.status_code == 201, alert.text
                hook = http.post("/webhooks", json={"url": "https://example.com/never"})
                assert hook.status_code == 201, hook.text
            notification_id = asyncio.run(_a_notification(migrated, uuid.UUID(alert.json()["id"])))
            existing = fuzz(
                url,
                token,
                tmp_path / "existing.toml",
                "--exclude-method",
                "DELETE",
                alert_id=alert.json()["id"],
                notification_id=str(notification_id),
                webhook_id=hook.json()["id"],
            )
            assert_clean(existing, "notifications", log)
            assert answered_about(log, alert.json()["id"]) >= 5, "the fuzzer hardly reached the alert behind its id"


async def _a_notification(settings: Settings, alert_id: uuid.UUID) -> uuid.UUID:
    """An inbox row of the owner of ``alert_id`` (the fuzzing user), written as the owner role."""
    notification_id = uuid.uuid4()
    conn = await asyncpg.connect(settings.postgres.notifications_dsn.get_secret_value())
    try:
        user_id = await conn.fetchval("SELECT user_id FROM price_alerts WHERE alert_id = $1", alert_id)
        await conn.execute(
            "INSERT INTO notifications (notification_id, user_id, title, body, created_at) "
            "VALUES ($1, $2, 'fuzzed', '', to_timestamp($3))",
            notification_id,
            user_id,
            time.time(),
        )
    finally:
        await conn.close()
    return notification_id
