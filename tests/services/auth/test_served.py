"""The auth service as users run it: ``nexanest serve auth`` under uvicorn
(integration), register, log in, who am I, log out."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from nexanest.pipeline.settings import Settings
from tests.services.auth.conftest import PASSWORD, new_email
from tests.services.served import served

pytestmark = pytest.mark.integration


async def test_nexanest_serve_auth_registers_logs_in_and_out(migrated: Settings, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    email = new_email()
    with served("auth", migrated, log) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            registered = await http.post(
                "/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Served"}
            )
            assert registered.status_code == 201
            login = await http.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            me = await http.get("/auth/me", headers=headers)
            assert me.json()["user_id"] == str(uuid.UUID(registered.json()["user_id"]))
            assert (await http.post("/auth/logout", headers=headers)).status_code == 204
            assert (await http.get("/auth/me", headers=headers)).status_code == 401
    # The log has every request, and neither the password nor the token.
    text = log.read_text()
    assert text.count('"event": "request"') + text.count('"event":"request"') >= 5
    assert PASSWORD not in text
    assert login.json()["access_token"] not in text
