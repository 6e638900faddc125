"""How a request's acting user is established.

A route asks for the acting user with the dependency ``BearerAuth``:

    current_user = BearerAuth(verifier)

    @router.get("/portfolios")
    async def portfolios(user: Annotated[Identity, Depends(current_user)]) -> ...

It reads ``Authorization: Bearer <token>``, hands the token to a
``TokenVerifier`` and returns the ``Identity`` it vouches for; with no token, or
one the verifier refuses, the request ends in 401 with a ``WWW-Authenticate``
challenge (RFC 6750). No route sees a request whose user was not established.

One verifier lives here, ``SignedTokens``: HMAC-SHA256 tokens that carry the
user id and the expiry, checked without any lookup. Such a token cannot be
revoked before it expires, so it suits short-lived and service-to-service
credentials. The user sessions (``services/sessions.py``: opaque tokens whose
hash is kept in Redis, revoked at logout) are the second ``TokenVerifier``
behind the same dependency, the one every service uses for its users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Protocol

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from nexanest.pipeline.log import get_logger
from nexanest.pipeline.settings import ServicesSettings

_log = get_logger("nexanest.services.tokens")

#: Whatever ``BearerAuth`` guards answers 401 too: for a router's or a route's
#: ``responses=``, so that the OpenAPI document lists it.
AUTH_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {"description": "No valid access token; the WWW-Authenticate header says why."}
}

_REALM = "nexanest"
_BEARER = HTTPBearer(
    auto_error=False,  # BearerAuth answers itself, with the RFC 6750 challenge
    scheme_name="bearer",
    description="An access token: `Authorization: Bearer <token>`.",
)


#: What a user may do beyond their own data: ``admin`` is the operator's role.
Role = Literal["user", "admin"]


@dataclass(frozen=True)
class Identity:
    """The acting user of a request, as a verifier vouches for it."""

    user_id: uuid.UUID
    #: When the token stops being accepted (Unix seconds). For a session token
    #: this is the idle deadline, pushed forward by each use up to the absolute one.
    expires_at_s: int
    #: The user's role when the token was issued (a signed token carries none: ``user``).
    role: Role = "user"


class InvalidToken(Exception):
    """A verifier refuses a token. ``reason`` is for logs and tests; a client
    learns only whether it expired."""

    def __init__(self, reason: Literal["malformed", "bad_signature", "expired", "too_long_lived", "unknown"]) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Identity:
        """The identity ``token`` stands for; raises ``InvalidToken`` otherwise.
        Must not log the token."""
        ...


class BearerAuth:
    """The auth dependency: ``Depends(BearerAuth(verifier))`` gives a route the
    acting user's ``Identity`` or ends the request in 401."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def __call__(self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> Identity:
        if credentials is None:  # no Authorization header, or not a bearer one
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="an access token is required",
                headers={"WWW-Authenticate": f'Bearer realm="{_REALM}"'},
            )
        try:
            return await self._verifier.verify(credentials.credentials)
        except InvalidToken as exc:
            _log.info("token_refused", reason=exc.reason)
            description = "the access token expired" if exc.reason == "expired" else "the access token is invalid"
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=description,
                headers={
                    "WWW-Authenticate": (
                        f'Bearer realm="{_REALM}", error="invalid_token", error_description="{description}"'
                    )
                },
            ) from None


# nn1.<user id, 32 hex digits>.<expiry, Unix seconds>.<HMAC-SHA256, base64url without padding>
_TOKEN = re.compile(r"(nn1\.([0-9a-f]{32})\.([0-9]{1,12}))\.([A-Za-z0-9_-]{43})")
_MAX_TOKEN_CHARS = 128


class SignedTokens:
    """Issues and verifies HMAC-SHA256 signed access tokens.

    A token names a user and its expiry and is valid until then; whoever holds
    the secret can mint any, so the secret must stay as private as a password.
    A token whose expiry lies further ahead than ``lifetime_s`` (plus
    ``clock_skew_s``) is refused, so that lowering the lifetime also shortens
    the tokens already out. ``clock`` (Unix seconds) is for tests.
    """

    #: Tolerance for clocks of the issuing and verifying hosts that differ a little.
    clock_skew_s: Final = 30

    def __init__(self, secret: SecretStr, lifetime_s: int, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret.get_secret_value()) < 32:
            raise ValueError("the token secret must have at least 32 characters")
        if lifetime_s <= 0:
            raise ValueError(f"lifetime_s must be positive, not {lifetime_s}")
        self._key = secret.get_secret_value().encode()
        self._lifetime_s = lifetime_s
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: ServicesSettings) -> SignedTokens:
        """Raises ``ConfigurationError`` when no token secret is set."""
        return cls(settings.token_secret_or_raise(), settings.token_lifetime_s)

    def issue(self, user_id: uuid.UUID) -> str:
        """A token for ``user_id``, valid for ``lifetime_s`` from now."""
        payload = f"nn1.{user_id.hex}.{int(self._clock()) + self._lifetime_s}"
        return f"{payload}.{self._mac(payload)}"

    async def verify(self, token: str) -> Identity:
        """The identity ``token`` stands for; raises ``InvalidToken``. The
        signature is checked (in constant time) before anything the token says
        is believed."""
        match = _TOKEN.fullmatch(token) if len(token) <= _MAX_TOKEN_CHARS else None
        if match is None:
            raise InvalidToken("malformed")
        payload, user_hex, expires, mac = match.groups()
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidToken("bad_signature")
        now = self._clock()
        expires_at_s = int(expires)
        if now >= expires_at_s:
            raise InvalidToken("expired")
        if expires_at_s - now > self._lifetime_s + self.clock_skew_s:
            raise InvalidToken("too_long_lived")
        return Identity(user_id=uuid.UUID(hex=user_hex), expires_at_s=expires_at_s)

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
