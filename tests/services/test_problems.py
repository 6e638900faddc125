"""Errors as problem bodies, and the body limit (unit, in process through httpx).

No ``from __future__ import annotations``: FastAPI must see the route annotations.
"""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from nexanest.services.app import create_app
from nexanest.services.problems import MEDIA_TYPE, Problem


class Order(BaseModel):
    symbol: str = Field(pattern=r"^[A-Z]{1,8}$")
    password: str


def build() -> FastAPI:
    router = APIRouter()

    @router.post("/orders")
    async def order(body: Order) -> dict[str, str]:
        return {"symbol": body.symbol}

    @router.get("/orders/{order_id}")
    async def missing(order_id: int) -> dict[str, str]:
        raise Problem(404, f"no order {order_id}")

    @router.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret-ish internal detail")

    return create_app("probe", routers=[router], max_body_bytes=2048)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as c:
        yield c


async def test_an_http_error_is_a_problem_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders/7")
    assert response.status_code == 404
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no order 7",
        "instance": "/orders/7",
    }
    unknown = await client.get("/nowhere")
    assert (unknown.status_code, unknown.json()["title"]) == (404, "Not Found")


async def test_invalid_input_says_where_and_never_echoes_the_value(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json={"symbol": "lower-case", "password": 12345678})
    assert response.status_code == 422
    assert response.headers["content-type"] == MEDIA_TYPE
    body = response.json()
    assert body["status"] == 422
    assert {tuple(e["loc"]) for e in body["errors"]} == {("body", "symbol"), ("body", "password")}
    assert "lower-case" not in response.text
    assert "12345678" not in response.text


async def test_an_unhandled_error_is_a_500_without_its_message(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == MEDIA_TYPE
    assert "secret-ish" not in response.text
    assert "Traceback" not in response.text


async def test_a_body_over_the_limit_is_refused_declared_or_streamed(client: httpx.AsyncClient) -> None:
    big = b'{"symbol": "A", "password": "' + b"x" * 4096 + b'"}'
    declared = await client.post("/orders", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["detail"] == "the request body is larger than 2048 bytes"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = await client.post("/orders", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    small = await client.post("/orders", json={"symbol": "AB", "password": "pw"})
    assert (small.status_code, small.json()) == (200, {"symbol": "AB"})


async def test_the_openapi_document_declares_problem_bodies_for_invalid_input(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert "Problem" in schemas
    assert "HTTPValidationError" not in schemas
    declared = document["paths"]["/orders"]["post"]["responses"]["422"]["content"]
    assert declared == {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
