"""The app factory every service is built with.

``create_app`` gives each service the same frame, so that a service module holds
only its own routes: ``/healthz`` (the process answers), ``/readyz`` (the
resources it needs answer, or 503 naming the ones that do not), the OpenAPI
document at ``/openapi.json``, one structured log line per request, and a
lifespan that opens the service's resources (pools, clients) at start and
closes them at stop. Everything a service needs is passed in; nothing here is
global, so tests build as many apps as they like side by side.

Logs go through ``pipeline/log.py``; the entrypoint configures it once
(``configure_logging``), as every ``nexanest`` command does. Under uvicorn, pass
``log_config=None`` (its own lines then reach the handler that sets up) and
``access_log=False`` (the request log here replaces it).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, Literal, TypeVar, cast

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexanest.pipeline import metrics
from nexanest.pipeline.log import get_logger
from nexanest.services import problems

T = TypeVar("T")

_log = get_logger("nexanest.services")
#: A request id a client may choose (echoed and logged): short, and nothing that
#: could forge a log line.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: Probes and scrapes come every few seconds; their lines would drown the rest at info.
_PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True, eq=False)
class Resource(Generic[T]):
    """Something a service holds for its whole life: a database pool, a Redis client.

    ``open`` is entered when the app starts and left when it stops, in reverse
    order of the resources; if one cannot be opened the start fails
    (``ResourceOpenError`` names it) and those already opened are closed.
    ``check``, when given, is what ``/readyz`` asks: it gets the opened value and
    returns once the resource answers, or raises. A route reaches the opened
    value with ``Depends(resource.get)``, or calls ``resource.get(request)``.

    A route module that closes over its resources (a router built in a
    function, as nothing here is global) must not use ``from __future__ import
    annotations``: FastAPI evaluates string annotations in the module's globals,
    where ``Annotated[..., Depends(db.get)]`` of a local ``db`` cannot be
    found, and the parameter silently becomes a query parameter.
    """

    name: str
    open: Callable[[], AbstractAsyncContextManager[T]]
    check: Callable[[T], Awaitable[object]] | None = None

    def get(self, request: Request) -> T:
        """The opened value. Raises ``RuntimeError`` outside the app's lifespan
        (the resource is not open) or in an app it was not given to."""
        opened: dict[Resource[Any], object] = getattr(request.app.state, "resources", {})
        if self not in opened:
            raise RuntimeError(f"resource {self.name!r} is not open in this app")
        return cast(T, opened[self])


class ResourceOpenError(RuntimeError):
    """A resource could not be opened at start; the service does not start."""

    def __init__(self, resource: str) -> None:
        super().__init__(f"cannot open {resource!r}")
        self.resource = resource


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """``checks`` maps each resource to ``ok``, ``timeout``, ``not open``, or
    ``failed: <error type>`` (the type only: driver messages stay in the log)."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


def create_app(
    service: str,
    *,
    resources: Sequence[Resource[Any]] = (),
    routers: Sequence[APIRouter] = (),
    readiness_timeout_s: float = 2.0,
    app_version: str | None = None,
    max_body_bytes: int = 64 * 1024,
) -> FastAPI:
    """A FastAPI app for ``service`` (its name in logs and the OpenAPI title).

    ``resources`` are opened by the app's lifespan and checked by ``/readyz``,
    each with at most ``readiness_timeout_s``, all at once; ``routers`` hold the
    service's own routes. ``app_version`` defaults to the installed package's.
    Every error answers with a problem body (``problems.py``), and request bodies
    over ``max_body_bytes`` with 413.
    Raises ``ValueError`` when two resources share a name (``/readyz`` reports
    by name).
    """
    names = [r.name for r in resources]
    if len(set(names)) != len(names):
        raise ValueError(f"resource names must be unique: {names}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            opened: dict[Resource[Any], object] = {}
            for resource in resources:
                try:
                    opened[resource] = await stack.enter_async_context(resource.open())
                except Exception as exc:
                    _log.error("service_start_failed", service=service, resource=resource.name, error=repr(exc))
                    raise ResourceOpenError(resource.name) from exc
            app.state.resources = opened
            _log.info("service_started", service=service, resources=names)
            try:
                yield
            finally:
                app.state.resources = {}
                _log.info("service_stopping", service=service)
        _log.info("service_stopped", service=service)

    app = FastAPI(title=f"NexaNest {service}", version=app_version or _package_version(), lifespan=lifespan)
    problems.install(app, max_body_bytes=max_body_bytes)
    app.add_middleware(_RequestLog, service=service)  # outermost: it logs refusals of the body limit too
    failing: set[str] = set()  # resources whose last check failed: log changes, not every probe

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """The process's metrics for Prometheus (``pipeline/metrics.py``), on the service's own port."""
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> Health:
        """The process answers. Says nothing about its resources (``/readyz`` does)."""
        return Health()

    @app.get(
        "/readyz",
        tags=["probes"],
        responses={503: {"model": Readiness, "description": "a resource does not answer"}},
    )
    async def readyz(request: Request, response: Response) -> Readiness:
        """Every resource answers its check (200), or not (503, naming each that does not)."""
        opened: dict[Resource[Any], object] = getattr(request.app.state, "resources", {})
        outcomes = await asyncio.gather(*(_check(r, opened, readiness_timeout_s) for r in resources if r.check))
        checks = {name: outcome for name, outcome, _ in outcomes}
        for name, outcome, error in outcomes:
            if outcome != "ok" and name not in failing:
                failing.add(name)
                _log.warning("resource_unavailable", service=service, resource=name, outcome=outcome, error=error)
            elif outcome == "ok" and name in failing:
                failing.discard(name)
                _log.info("resource_available", service=service, resource=name)
        if all(outcome == "ok" for outcome in checks.values()):
            return Readiness(status="ready", checks=checks)
        response.status_code = 503
        return Readiness(status="unavailable", checks=checks)

    for router in routers:
        app.include_router(router)
    return app


async def _check(
    resource: Resource[Any], opened: dict[Resource[Any], object], timeout_s: float
) -> tuple[str, str, str | None]:
    """(name, outcome for the response, the error for the log)."""
    if resource not in opened:
        return resource.name, "not open", None
    assert resource.check is not None  # noqa: S101 - only resources with a check are asked
    try:
        await asyncio.wait_for(resource.check(opened[resource]), timeout_s)
    except TimeoutError:
        return resource.name, "timeout", None
    except Exception as exc:  # noqa: BLE001 - whatever the failure, the resource is not ready
        return resource.name, f"failed: {type(exc).__name__}", repr(exc)
    return resource.name, "ok", None


def _package_version() -> str:
    try:
        return version("nexanest")
    except PackageNotFoundError:  # running from a tree that was never installed
        return "0+unknown"


class _RequestLog:
    """One log line per request (method, path, status, duration), with a request
    id bound to everything logged while the request runs and returned as
    ``X-Request-ID``; and the request counted in ``nexanest_http_requests_total``
    and ``nexanest_http_request_duration_seconds`` by route template. A plain
    ASGI middleware, so that streamed responses (server-sent events) pass
    through untouched. Never logs headers or the query
    string: they may carry credentials."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self._app = app
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = _request_id(scope)
        status = 500  # unless the app starts a response
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self._app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route = getattr(scope.get("route"), "path", "unmatched")
                method = scope["method"]
                metrics.HTTP_REQUESTS.labels(self._service, route, method, str(status)).inc()
                metrics.HTTP_REQUEST_SECONDS.labels(self._service, route, method).observe(elapsed)
                fields = {
                    "service": self._service,
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                }
                if scope["path"] in _PROBE_PATHS and status < 500:
                    _log.debug("request", **fields)
                else:
                    _log.info("request", **fields)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _CLIENT_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex
