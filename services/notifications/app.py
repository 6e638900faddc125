"""The notifications service (:8004): price alerts, the in-app inbox, webhook
endpoints, and the admins' operational alerts.

``nexanest serve notifications`` runs ``build_app(settings)``. It connects as the
service's own role ``nexanest_notifications`` (owns nothing, bypasses nothing) to
the notifications database, reads the pipeline's quotes (Redis ``db_quotes``, for
an alert's starting state) and uses ``db_notifications`` for its queue. Unless
told otherwise (``NEXANEST_NOTIFICATIONS__EVALUATOR_IN_SERVICE`` /
``__WORKER_IN_SERVICE``), it also runs the alert evaluator (``evaluator.py``) and a
delivery worker (``worker.py``); ``nexanest serve notifications-worker`` runs more
workers, or the worker alone.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from nexanest.pipeline.settings import Settings
from nexanest.services.app import Resource, create_app
from nexanest.services.notifications.evaluator import evaluator_resource
from nexanest.services.notifications.routes import build_router
from nexanest.services.notifications.sealing import SecretBox
from nexanest.services.notifications.worker import worker_resource
from nexanest.services.resources import postgres_pool, redis_db
from nexanest.services.sessions import session_store
from nexanest.services.tokens import TokenVerifier


def build_app(settings: Settings, *, verifier: TokenVerifier | None = None) -> FastAPI:
    """The notifications service. ``verifier`` checks bearer tokens; None means the
    auth service's sessions in Redis (``settings.redis.db_sessions``). Raises
    ``ConfigurationError`` when no key seals webhook secrets (``sealing.py``)."""
    s, n = settings.services, settings.notifications
    box = SecretBox.from_settings(settings)
    db = postgres_pool("notifications-db", s.notifications_dsn, max_size=s.pool_max_size)
    quotes = redis_db("quotes-redis", settings.redis, settings.redis.db_quotes)
    queue = redis_db("notifications-redis", settings.redis, settings.redis.db_notifications)
    resources: list[Resource[Any]] = [db, quotes, queue]
    if verifier is None:
        verifier, sessions = session_store(settings)
        resources.append(sessions)
    if n.evaluator_in_service:
        resources.append(evaluator_resource(settings))
    if n.worker_in_service:
        resources.append(worker_resource(settings))
    router = build_router(settings, verifier=verifier, db=db, quotes=quotes, queue_redis=queue, box=box)
    return create_app("notifications", resources=resources, routers=[router], max_body_bytes=s.max_body_bytes)
