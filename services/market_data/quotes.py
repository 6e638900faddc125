"""The latest quotes, from Redis where the consumer keeps them: ``GET /quotes``.

A quote is the hash ``<quote_key_prefix><SYMBOL>`` that ``RedisQuoteSink``
writes (``pipeline/sinks/redis_quotes.py``). Any number of quotes are read in
one round trip: one ``HMGET`` per symbol, pipelined without a transaction (the
consumer's script writes each hash atomically, so each read sees a whole quote).

No ``from __future__ import annotations``: the router closes over its
resources (see ``Resource`` in services/app.py).
"""

import re
from collections.abc import Sequence
from typing import Annotated, Final

import redis.asyncio as redis
from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from nexanest.services.app import Resource
from nexanest.services.market_data.limits import MarketDataLimits
from nexanest.services.market_data.models import Quote, Quotes
from nexanest.services.market_data.symbols import InvalidSymbols, parse_symbol_list
from nexanest.services.problems import problem_responses
from nexanest.services.tokens import BearerAuth, TokenVerifier

_FIELDS: Final = ("ts_ns", "seq", "price", "bid", "ask", "size", "exchange", "updated_ns")


async def read_quotes(client: redis.Redis, key_prefix: str, symbols: Sequence[str]) -> dict[str, Quote]:
    """The quotes of ``symbols`` that exist, by symbol, in one round trip."""
    if not symbols:
        return {}
    pipe = client.pipeline(transaction=False)
    for symbol in symbols:
        pipe.hmget(key_prefix + symbol, _FIELDS)
    replies = await pipe.execute()
    quotes: dict[str, Quote] = {}
    for symbol, values in zip(symbols, replies, strict=True):
        ts_ns, seq, price, bid, ask, size, exchange, updated_ns = (None if v is None else v.decode() for v in values)
        if ts_ns is None or price is None or size is None or exchange is None:
            continue  # no quote (or a key that is not one)
        quotes[symbol] = Quote.from_fields(
            symbol,
            ts_ns=int(ts_ns),
            seq=int(seq or 0),
            price=price,
            bid=bid or None,
            ask=ask or None,
            size=size,
            exchange=exchange,
            updated_ns=int(updated_ns or ts_ns),
        )
    return quotes


def quotes_router(
    redis_quotes: Resource[redis.Redis],
    *,
    key_prefix: str,
    symbol_rule: re.Pattern[str],
    verifier: TokenVerifier,
    limits: MarketDataLimits,
) -> APIRouter:
    """``GET /quotes/{symbol}`` and ``GET /quotes?symbols=A,B,C``."""
    router = APIRouter(
        tags=["quotes"], dependencies=[Depends(BearerAuth(verifier))], responses=problem_responses(401, 422)
    )
    max_list_chars = limits.max_quote_symbols * 33

    @router.get("/quotes")
    async def quotes(
        client: Annotated[redis.Redis, Depends(redis_quotes.get)],
        symbols: Annotated[
            str,
            Query(
                min_length=1,
                max_length=max_list_chars,
                description=f"Comma-separated symbols, at most {limits.max_quote_symbols}, e.g. `AAPL,MSFT`.",
            ),
        ],
    ) -> Quotes:
        """The latest quotes of several symbols, read in one round trip, in the order
        asked for; symbols without a quote are listed in ``missing``."""
        try:
            wanted = parse_symbol_list(symbols, symbol_rule, limits.max_quote_symbols)
        except InvalidSymbols as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
        found = await read_quotes(client, key_prefix, wanted)
        return Quotes(quotes=[found[s] for s in wanted if s in found], missing=[s for s in wanted if s not in found])

    @router.get("/quotes/{symbol:path}", responses=problem_responses(404))
    async def quote(
        client: Annotated[redis.Redis, Depends(redis_quotes.get)],
        symbol: Annotated[str, Path(pattern=symbol_rule.pattern, description="e.g. `AAPL`")],
    ) -> Quote:
        """The latest quote of ``symbol`` (a market index's name works too)."""
        found = await read_quotes(client, key_prefix, [symbol])
        if symbol not in found:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="there is no quote for this symbol")
        return found[symbol]

    return router
