"""Errors as RFC 9457 problem details, for every service alike.

A client of any NexaNest service gets the same shape for every error: an
``application/problem+json`` body with ``type``, ``title``, ``status``,
``detail`` and ``instance``, plus ``errors`` for invalid input (where and what,
never the offending value: it may be a password). Routes raise FastAPI's
``HTTPException`` (or ``Problem``) and never build error bodies themselves.
An unhandled error answers 500 with a generic detail: its message and stack go
to the log, never to the client.

``install`` also rewrites the OpenAPI document so that it says what the service
really answers on invalid input (a problem body, not FastAPI's default
``HTTPValidationError``): schemathesis holds every response to the document.
``BodyLimit`` refuses request bodies over a size with 413 before a route reads
them, whether the client sends a ``Content-Length`` or streams chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nexanest.pipeline.log import get_logger

_log = get_logger("nexanest.services.problems")

MEDIA_TYPE: Final = "application/problem+json"

#: The problem schema as the OpenAPI document states it.
PROBLEM_SCHEMA: Final[dict[str, Any]] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


class Problem(HTTPException):
    """An ``HTTPException`` whose ``detail`` is a sentence for the client."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail=detail, headers=headers)


def problem_response(
    status: int, detail: str | None, instance: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": _title(status), "status": status, "instance": instance}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries declaring problem bodies for ``statuses`` (for a route or a router)."""
    return {
        status: {
            "description": _title(status),
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def install(app: FastAPI, *, max_body_bytes: int) -> None:
    """Problem bodies for every error of ``app``, a body size limit, and an
    OpenAPI document that declares both."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it alone
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            exc.status_code, detail, request.url.path, headers=dict(exc.headers) if exc.headers else None
        )

    async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return problem_response(422, "the request is not valid", request.url.path, errors=errors)

    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        _log.error("request_failed", path=request.url.path, error=type(exc).__name__, exc_info=exc)
        return problem_response(500, "the service failed to answer; the error is in its log", request.url.path)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_input)
    app.add_exception_handler(Exception, unhandled)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.openapi = _openapi_with_problems(app)  # type: ignore[method-assign]


def _openapi_with_problems(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = PROBLEM_SCHEMA
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    if "422" in responses:
                        responses["422"] = problem_responses(422)[422]
            app.openapi_schema = document
        return app.openapi_schema

    return openapi


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class BodyLimit:
    """413 for a request body over ``max_bytes``: by its ``Content-Length`` before
    the route runs, or, for a streamed body, as soon as the bytes read pass it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self._app = app
        self._max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self._max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                break
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max_bytes:
                    raise _TooLarge(self._max_bytes)
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted, tracking)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than {self._max_bytes} bytes"
        await problem_response(413, detail, scope["path"])(scope, receive, send)


class _TooLarge(StarletteHTTPException):
    """Raised from the body read: an ``HTTPException``, so that FastAPI passes it
    through as it is (it turns other errors of the body read into 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"the request body is larger than {max_bytes} bytes")
