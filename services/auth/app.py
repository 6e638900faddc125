"""The auth service (:8001): accounts, passwords and sessions.

``build_app`` wires the parts: the ``auth`` database as the login role
``nexanest_auth`` (``settings.services.auth_dsn``), the sessions and login
throttle in Redis database ``db_sessions``, argon2id password hashes. Every
other service verifies the tokens it issues with ``services/sessions.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.app import create_app
from nexanest.services.auth.passwords import Passwords
from nexanest.services.auth.routes import AuthParts, auth_router
from nexanest.services.auth.throttle import LoginThrottle
from nexanest.services.resources import postgres_pool
from nexanest.services.sessions import Sessions, sessions_redis
from nexanest.services.tokens import BearerAuth, TokenVerifier


def build_app(
    settings: Settings,
    *,
    verifier: TokenVerifier | None = None,
    passwords: Passwords | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The auth service. ``verifier`` decides which tokens the routes accept
    (default: the sessions this service creates); ``passwords`` and ``clock``
    (of the sessions) are for tests."""
    services = settings.services
    db = postgres_pool("auth-db", services.auth_dsn, max_size=services.pool_max_size)
    client, redis_resource = sessions_redis(settings)
    sessions = Sessions.from_settings(client, settings, clock=clock)
    parts = AuthParts(
        db=db,
        sessions=sessions,
        throttle=LoginThrottle.from_settings(client, services),
        passwords=passwords or Passwords(),
        current_user=BearerAuth(verifier or sessions),
    )
    return create_app(
        "auth",
        resources=[db, redis_resource],
        routers=[auth_router(parts)],
        max_body_bytes=services.max_body_bytes,
    )
