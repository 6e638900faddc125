"""Stored market data over a time range: ``GET /ticks``, ``GET /bars``, ``GET /indices``.

Ranges are half-open, ``[from, to)``, RFC 3339 with a time zone. ``to``
defaults to now and ``from`` to a default span before ``to``; a range that is
empty, reversed, or longer than the service allows is refused with 422 (never
cut short). Ticks and index values come in pages with an opaque cursor
(``cursor.py``); bars come whole, the range bounding their count.

No ``from __future__ import annotations``: the router closes over its
resources (see ``Resource`` in services/app.py).
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import AwareDatetime

from nexanest.pipeline.sinks.ohlcv import RESOLUTIONS, WIDTHS, Resolution
from nexanest.services.app import Resource
from nexanest.services.market_data import repository
from nexanest.services.market_data.cursor import InvalidCursor, decode_cursor, encode_cursor
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.market_data.models import Bars, IndexPage, TickPage
from nexanest.services.problems import problem_responses
from nexanest.services.tokens import BearerAuth, TokenVerifier

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

FromParam = Annotated[
    AwareDatetime | None, Query(alias="from", description="Start of the range (inclusive), RFC 3339 with a zone.")
]
ToParam = Annotated[AwareDatetime | None, Query(alias="to", description="End of the range (exclusive); default now.")]
CursorParam = Annotated[
    str | None,
    Query(max_length=400, description="`next_cursor` of the previous page; it carries the range, so omit from/to."),
]


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // _MICROSECOND


def _at(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def _invalid(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def _range(
    start: datetime | None, end: datetime | None, default_span: timedelta, longest: timedelta
) -> tuple[datetime, datetime]:
    """``[start, end)`` with the defaults filled in; raises 422 when it is empty or too long."""
    end = end or datetime.now(UTC)
    try:
        start = start or end - default_span
    except OverflowError:  # before the year 1
        raise _invalid("the range starts before the earliest time there is") from None
    return _checked(start, end, longest)


def _checked(start: datetime, end: datetime, longest: timedelta) -> tuple[datetime, datetime]:
    if start >= end:
        raise _invalid("the range is empty: from must be earlier than to")
    if end - start > longest:
        raise _invalid(f"the range is longer than the {_span(longest)} one request may cover")
    return start, end


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def history_router(
    pool: Resource[asyncpg.Pool], *, symbol_rule: re.Pattern[str], verifier: TokenVerifier, limits: MarketDataLimits
) -> APIRouter:
    """``GET /ticks/{symbol}``, ``GET /bars/{symbol}`` and ``GET /indices/{name}/values``."""
    router = APIRouter(dependencies=[Depends(BearerAuth(verifier))], responses=problem_responses(401, 422))
    SymbolParam = Annotated[str, Path(pattern=symbol_rule.pattern, description="e.g. `AAPL`")]
    LimitParam = Annotated[
        int, Query(ge=1, le=limits.max_tick_page, description=f"Rows per page, at most {limits.max_tick_page}.")
    ]

    def continued(
        cursor: str | None, start: datetime | None, end: datetime | None, kind: Literal["ticks", "index"], subject: str
    ) -> tuple[datetime, datetime, str, int] | None:
        """The range and position a cursor continues (re-checked: a cursor is not trusted)."""
        if cursor is None:
            return None
        if start is not None or end is not None:
            raise _invalid("a cursor carries its range: leave out from and to")
        try:
            c = decode_cursor(cursor, kind, subject)
        except InvalidCursor as exc:
            raise _invalid(str(exc)) from None
        try:
            after, until = _at(c.time_us), _at(c.end_us)
        except OverflowError:
            raise _invalid("the cursor is not one this service issued") from None
        after, until = _checked(after, until, limits.max_tick_range)
        return after, until, c.source, c.seq

    @router.get("/ticks/{symbol:path}", tags=["ticks"])
    async def ticks(
        db: Annotated[asyncpg.Pool, Depends(pool.get)],
        symbol: SymbolParam,
        start: FromParam = None,
        end: ToParam = None,
        limit: LimitParam = limits.default_tick_page,
        cursor: CursorParam = None,
    ) -> TickPage:
        """The stored ticks of ``symbol`` in ``[from, to)``, oldest first (by time,
        then source and sequence number), a page at a time: follow ``next_cursor``
        until it is ``null`` to read every tick of the range exactly once, even
        while new ones arrive. ``from`` defaults to an hour before ``to``."""
        position = continued(cursor, start, end, "ticks", symbol)
        if position is None:
            first, until = _range(start, end, limits.default_tick_range, limits.max_tick_range)
            rows = await repository.fetch_ticks(db, symbol, first, until, limit + 1)
        else:
            first, until, source, seq = position
            rows = await repository.fetch_ticks(db, symbol, first, until, limit + 1, after=(source, seq))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor("ticks", symbol, _micros(until), _micros(last.time), last.source, last.seq)
        return TickPage(symbol=symbol, ticks=rows, next_cursor=next_cursor)

    @router.get("/bars/{symbol:path}", tags=["bars"])
    async def bars(
        db: Annotated[asyncpg.Pool, Depends(pool.get)],
        symbol: SymbolParam,
        interval: Annotated[Resolution, Query(description=f"One of {', '.join(RESOLUTIONS)}.")] = "1m",
        start: FromParam = None,
        end: ToParam = None,
    ) -> Bars:
        """The OHLCV bars of ``symbol`` whose bucket overlaps ``[from, to)``, oldest
        first; the same numbers on either TimescaleDB edition. ``from`` defaults to
        500 intervals before ``to``; at most 5,000 bars (by default) per request."""
        width = WIDTHS[interval]
        first, until = _range(start, end, limits.default_bars * width, limits.max_bars * width)
        return Bars(
            symbol=symbol, interval=interval, bars=await repository.fetch_bars(db, symbol, interval, first, until)
        )

    @router.get("/indices/{name:path}/values", tags=["indices"])
    async def index_values(
        db: Annotated[asyncpg.Pool, Depends(pool.get)],
        name: Annotated[str, Path(pattern=symbol_rule.pattern, description="The index's name, e.g. `NXS5`")],
        start: FromParam = None,
        end: ToParam = None,
        limit: LimitParam = limits.default_tick_page,
        cursor: CursorParam = None,
    ) -> IndexPage:
        """The computed values of a market index in ``[from, to)``, oldest first,
        paged like ticks. (Its latest value is a quote: ``GET /quotes/{name}``.)"""
        position = continued(cursor, start, end, "index", name)
        if position is None:
            first, until = _range(start, end, limits.default_tick_range, limits.max_tick_range)
            values = await repository.fetch_index_values(db, name, first, until, limit + 1)
        else:
            first, until, _, _ = position
            values = await repository.fetch_index_values(db, name, first, until, limit + 1, after=first)
        next_cursor = None
        if len(values) > limit:
            values = values[:limit]
            next_cursor = encode_cursor("index", name, _micros(until), _micros(values[-1].time))
        return IndexPage(name=name, values=values, next_cursor=next_cursor)

    return router
