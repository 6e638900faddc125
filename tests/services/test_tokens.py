"""The auth dependency and the signed-token verifier (unit).

No ``from __future__ import annotations``: routes close over the dependency
(see ``Resource`` in services/app.py).
"""

import base64
import uuid
from collections.abc import Callable
from typing import Annotated

import httpx
import pytest
import structlog
from fastapi import APIRouter, Depends, FastAPI
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.settings import ServicesSettings
from nexanest.services.app import create_app
from nexanest.services.tokens import AUTH_RESPONSES, BearerAuth, Identity, InvalidToken, SignedTokens

SECRET = SecretStr("k" * 40)
USER = uuid.UUID("0b5f6c2e-8f5e-4d1a-9c39-5a3f0e2d7b11")
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now_s: float = T0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def tokens(lifetime_s: int = 3600, secret: SecretStr = SECRET, clock: Clock | None = None) -> SignedTokens:
    return SignedTokens(secret, lifetime_s, clock=clock or Clock())


async def refusal(verifier: SignedTokens, token: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        await verifier.verify(token)
    return refused.value.reason


# -- the verifier --------------------------------------------------------------------


async def test_a_token_stands_for_its_user_until_it_expires() -> None:
    clock = Clock()
    verifier = tokens(clock=clock)
    token = verifier.issue(USER)
    assert await verifier.verify(token) == Identity(user_id=USER, expires_at_s=int(T0) + 3600)
    clock.now_s = T0 + 3599.5
    assert (await verifier.verify(token)).user_id == USER
    clock.now_s = T0 + 3600
    assert await refusal(verifier, token) == "expired"


async def test_a_token_carries_no_secret_and_a_fresh_one_differs_only_by_expiry() -> None:
    clock = Clock()
    verifier = tokens(clock=clock)
    first = verifier.issue(USER)
    clock.now_s += 1
    second = verifier.issue(USER)
    assert first != second
    assert SECRET.get_secret_value() not in first
    assert first.split(".")[:2] == second.split(".")[:2] == ["nn1", USER.hex]


async def test_an_altered_or_foreign_token_is_refused() -> None:
    verifier = tokens()
    token = verifier.issue(USER)
    prefix, user_hex, expires, mac = token.split(".")
    other_user = uuid.uuid4().hex
    assert await refusal(verifier, f"{prefix}.{other_user}.{expires}.{mac}") == "bad_signature"
    assert await refusal(verifier, f"{prefix}.{user_hex}.{int(expires) + 3600}.{mac}") == "bad_signature"
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert await refusal(verifier, f"{prefix}.{user_hex}.{expires}.{flipped}") == "bad_signature"
    assert await refusal(verifier, tokens(secret=SecretStr("z" * 40)).issue(USER)) == "bad_signature"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t.replace("nn1.", "nn2.", 1),
        lambda t: t.upper(),
        lambda t: t + "." + t,
        lambda t: " " + t,
        lambda t: t.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"\0" * 32).decode(),  # padded
        lambda t: "x" * 10_000,
    ],
)
async def test_a_malformed_token_is_refused_before_any_signature_work(mangle: Callable[[str], str]) -> None:
    verifier = tokens()
    token = verifier.issue(USER)
    assert await refusal(verifier, mangle(token)) == "malformed"


async def test_a_token_outliving_the_configured_lifetime_is_refused() -> None:
    # Issued under a 2 h lifetime, verified under 1 h: lowering the lifetime shortens tokens already out.
    long_lived = tokens(lifetime_s=7200).issue(USER)
    assert await refusal(tokens(lifetime_s=3600), long_lived) == "too_long_lived"
    # Within the clock-skew tolerance it is accepted.
    slightly = tokens(lifetime_s=3600 + SignedTokens.clock_skew_s).issue(USER)
    assert (await tokens(lifetime_s=3600).verify(slightly)).user_id == USER


@given(st.text(max_size=200))
async def test_any_other_string_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        await tokens().verify(token)


def test_a_short_secret_or_no_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        SignedTokens(SecretStr("short"), 3600)
    with pytest.raises(ValueError, match="positive"):
        SignedTokens(SECRET, 0)


def test_from_settings_needs_the_secret() -> None:
    with pytest.raises(ConfigurationError, match="NEXANEST_SERVICES__TOKEN_SECRET is not set"):
        SignedTokens.from_settings(ServicesSettings())
    configured = SignedTokens.from_settings(ServicesSettings(token_secret=SECRET, token_lifetime_s=600))
    assert configured.issue(USER).startswith(f"nn1.{USER.hex}.")


# -- the dependency ------------------------------------------------------------------


def app_with_me(verifier: SignedTokens) -> FastAPI:
    current_user = BearerAuth(verifier)
    router = APIRouter(responses=AUTH_RESPONSES)

    @router.get("/me")
    async def me(user: Annotated[Identity, Depends(current_user)]) -> dict[str, str]:
        return {"user_id": str(user.user_id)}

    return create_app("demo", routers=[router])


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service.test")


async def test_a_valid_bearer_token_gives_the_route_its_user() -> None:
    verifier = tokens(clock=Clock())
    async with client(app_with_me(verifier)) as http:
        response = await http.get("/me", headers={"Authorization": f"Bearer {verifier.issue(USER)}"})
    assert response.status_code == 200
    assert response.json() == {"user_id": str(USER)}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}, {"Authorization": ""}],
    ids=["none", "basic", "bearer-without-token", "empty"],
)
async def test_no_bearer_token_answers_401_with_a_challenge(headers: dict[str, str]) -> None:
    async with client(app_with_me(tokens())) as http:
        response = await http.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="nexanest"'


async def test_a_refused_token_answers_401_invalid_token_and_is_never_logged() -> None:
    clock = Clock()
    verifier = tokens(clock=clock)
    good = verifier.issue(USER)
    forged = tokens(secret=SecretStr("z" * 40), clock=clock).issue(USER)
    async with client(app_with_me(verifier)) as http:
        with structlog.testing.capture_logs() as logs:
            invalid = await http.get("/me", headers={"Authorization": f"Bearer {forged}"})
            clock.now_s += 3600
            expired = await http.get("/me", headers={"Authorization": f"bearer {good}"})
    assert (invalid.status_code, expired.status_code) == (401, 401)
    assert invalid.headers["www-authenticate"] == (
        'Bearer realm="nexanest", error="invalid_token", error_description="the access token is invalid"'
    )
    assert expired.headers["www-authenticate"] == (
        'Bearer realm="nexanest", error="invalid_token", error_description="the access token expired"'
    )
    assert [e["reason"] for e in logs if e["event"] == "token_refused"] == ["bad_signature", "expired"]
    assert good not in repr(logs)
    assert forged not in repr(logs)


async def test_the_openapi_document_declares_the_bearer_scheme_and_the_401() -> None:
    async with client(app_with_me(tokens())) as http:
        document = (await http.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token: `Authorization: Bearer <token>`.",
    }
    me = document["paths"]["/me"]["get"]
    assert me["security"] == [{"bearer": []}]
    assert "401" in me["responses"]
