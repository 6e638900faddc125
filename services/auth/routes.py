"""The auth service's routes: register, log in, log out, who am I, change password.

No ``from __future__ import annotations``: the routes close over the service's
resources (see ``Resource`` in services/app.py).

Answers that could tell whether an account exists are the same for an unknown
email and a wrong password (401, after the same hash work), and both count
towards the throttle. Only registration says that an email is taken (409): it
must.
"""

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Final

import asyncpg
from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nexanest.services import problems
from nexanest.services.app import Resource
from nexanest.services.auth import repository
from nexanest.services.auth.models import AccessToken, LoginRequest, PasswordChangeRequest, RegisterRequest, User
from nexanest.services.auth.passwords import Passwords
from nexanest.services.auth.throttle import LoginThrottle, Throttled
from nexanest.services.problems import Problem
from nexanest.services.sessions import NewSession, Sessions
from nexanest.services.tokens import BearerAuth, Identity

_CHALLENGE: Final = 'Bearer realm="nexanest"'
#: The token of the request itself (logout revokes it); the same scheme as BearerAuth's.
_BEARER: Final = HTTPBearer(
    auto_error=False, scheme_name="bearer", description="An access token: `Authorization: Bearer <token>`."
)
#: RFC 6749 5.1: a response carrying a token must not be cached.
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _declared(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Problem bodies for ``statuses``, with the headers each always carries.
    (400: a body that is not JSON at all, which FastAPI refuses before validation.)"""
    responses = problems.problem_responses(*statuses)
    headers = {
        401: ("WWW-Authenticate", "The authentication challenge (RFC 6750).", {"type": "string"}),
        429: ("Retry-After", "Seconds until a login may be tried again.", {"type": "integer", "minimum": 1}),
    }
    for code, (name, description, schema) in headers.items():
        if code in responses:
            responses[code]["headers"] = {name: {"description": description, "required": True, "schema": schema}}
    return responses


@dataclass(frozen=True)
class AuthParts:
    """What the routes work with, built once by ``build_app``."""

    db: Resource[asyncpg.Pool]
    sessions: Sessions
    throttle: LoginThrottle
    passwords: Passwords
    current_user: BearerAuth


def auth_router(parts: AuthParts) -> APIRouter:
    router = APIRouter(prefix="/auth", tags=["auth"])
    db, sessions, throttle, passwords = parts.db, parts.sessions, parts.throttle, parts.passwords
    Pool = Annotated[asyncpg.Pool, Depends(db.get)]
    CurrentUser = Annotated[Identity, Depends(parts.current_user)]

    @router.post("/register", status_code=status.HTTP_201_CREATED, responses=_declared(400, 409))
    async def register(body: RegisterRequest, pool: Pool) -> User:
        """Create an account (role ``user``). 409 when the email (compared
        case-insensitively) is taken. Log in afterwards for a token."""
        password_hash = await passwords.hash(body.password)
        try:
            user = await repository.create_user(
                pool,
                user_id=uuid.uuid4(),
                email=body.email,
                password_hash=password_hash,
                display_name=body.display_name,
            )
        except repository.EmailTaken:
            raise Problem(status.HTTP_409_CONFLICT, "an account with this email exists already") from None
        return _user(user)

    @router.post("/login", responses=_declared(400, 401, 403, 429))
    async def login(body: LoginRequest, request: Request, response: Response, pool: Pool) -> AccessToken:
        """Exchange email and password for an access token (a new session).
        401 for an unknown email or a wrong password alike; 429 with
        ``Retry-After`` after too many failures for the account or from the
        client's address; 403 for a disabled account (the password was right)."""
        address = _address(request)
        await _admit(throttle, body.email, address)
        record = await repository.find_for_login(pool, body.email)
        if record is None:
            matched = await passwords.verify_unknown_user(body.password)
        else:
            matched = await passwords.verify(record.password_hash, body.password)
        if record is None or not matched:
            wrong = "the email or the password is wrong"
            raise Problem(status.HTTP_401_UNAUTHORIZED, wrong, headers={"WWW-Authenticate": _CHALLENGE})
        await throttle.succeeded(body.email, address)
        if not record.is_active:
            raise Problem(status.HTTP_403_FORBIDDEN, "the account is disabled")
        if passwords.needs_rehash(record.password_hash):
            await repository.set_password_hash(pool, record.user_id, await passwords.hash(body.password))
        return _token(await sessions.create(record.user_id, record.role), response)

    @router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_declared(401))
    async def logout(
        _user: CurrentUser, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        """End the session of the token sent; the user's other sessions go on."""
        if credentials is not None:  # BearerAuth let the request in: there is one
            await sessions.revoke(credentials.credentials)

    @router.get("/me", responses=_declared(401, 404))
    async def me(user: CurrentUser, pool: Pool) -> User:
        """The user the token stands for."""
        found = await repository.get_user(pool, user.user_id)
        if found is None:
            raise Problem(status.HTTP_404_NOT_FOUND, "the user of this token no longer exists")
        return _user(found)

    @router.post("/password", responses=_declared(400, 401, 403, 404, 429))
    async def change_password(
        body: PasswordChangeRequest, user: CurrentUser, request: Request, response: Response, pool: Pool
    ) -> AccessToken:
        """Replace the password. Every session of the user ends, the one of
        this request included, and the answer is a token of a new session (so
        this client stays logged in). 403 when the current password is wrong;
        such failures count towards the login throttle of the account."""
        found = await repository.get_credentials(pool, user.user_id)
        if found is None:
            raise Problem(status.HTTP_404_NOT_FOUND, "the user of this token no longer exists")
        email, record = found
        address = _address(request)
        await _admit(throttle, email, address)
        if not await passwords.verify(record.password_hash, body.current_password):
            raise Problem(status.HTTP_403_FORBIDDEN, "the current password is wrong")
        await throttle.succeeded(email, address)
        await repository.set_password_hash(pool, user.user_id, await passwords.hash(body.new_password))
        await sessions.revoke_all_of_user(user.user_id)
        return _token(await sessions.create(user.user_id, record.role), response)

    return router


async def _admit(throttle: LoginThrottle, email: str, address: str) -> None:
    try:
        await throttle.admit(email, address)
    except Throttled as exc:
        raise Problem(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed attempts; try again later",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None


def _address(request: Request) -> str:
    """The client's address as the server sees it (no proxy headers: the
    services listen on loopback, and such a header is the client's to forge)."""
    return request.client.host if request.client else "unknown"


def _token(session: NewSession, response: Response) -> AccessToken:
    response.headers.update(_NO_STORE)
    return AccessToken(access_token=session.token, expires_in=session.expires_in_s)


def _user(user: repository.UserRecord) -> User:
    return User(
        user_id=user.user_id,
        email=user.email,
        display_name=user.display_name,
        role=user.role,
        created_at=user.created_at,
    )
