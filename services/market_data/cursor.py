"""Opaque cursors for keyset pagination of time-ordered rows.

A listing of ticks runs in the order of ``(time, source, source_seq)``, which
names a tick uniquely (``(source, seq)`` names it, and the consumer stores each tick once), so
"the rows after the last one seen" is one row comparison, however deep the
page: no OFFSET, no row skipped or repeated when new rows arrive. Index values
are unique by ``(index_name, time)`` and page on ``time`` alone.

A cursor carries what continues its listing: the kind of listing, its subject
(symbol or index name), the end of its range and the position after which the
next page starts, all as MessagePack in base64url. It is opaque to clients (its
form may change) but not secret: it holds nothing the client did not ask for,
and a cursor changed by hand can only move the position within that subject's
range, which the client could ask for anyway. Anything that does not decode
into a well-formed cursor is refused (``InvalidCursor``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Final, Literal

import msgspec

from nexanest.schemas.ticks import INT64_MAX, INT64_MIN, MAX_SOURCE_CHARS, MAX_SYMBOL_CHARS

_VERSION: Final = 1
#: Longer than any well-formed cursor (a 128-character source is the longest part).
MAX_CURSOR_CHARS: Final = 400

_Micros = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]


class Cursor(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """Where a listing stopped. Times are microseconds since the Unix epoch (the
    database's resolution); ``source`` and ``seq`` are empty for index values."""

    version: Literal[1]
    kind: Literal["ticks", "index"]
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SYMBOL_CHARS)]
    end_us: _Micros
    time_us: _Micros
    source: Annotated[str, msgspec.Meta(max_length=MAX_SOURCE_CHARS)] = ""
    seq: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] = 0


class InvalidCursor(ValueError):
    """The text is not a cursor this service issued (or could have)."""


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Cursor)


def encode_cursor(
    kind: Literal["ticks", "index"], subject: str, end_us: int, time_us: int, source: str = "", seq: int = 0
) -> str:
    raw = _encoder.encode(Cursor(_VERSION, kind, subject, end_us, time_us, source, seq))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(text: str, kind: Literal["ticks", "index"], subject: str) -> Cursor:
    """The cursor ``text`` stands for; raises ``InvalidCursor`` when it is malformed
    or belongs to another kind of listing or another subject."""
    if len(text) > MAX_CURSOR_CHARS:
        raise InvalidCursor("the cursor is too long")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        cursor = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidCursor("the cursor is not one this service issued") from None
    if cursor.kind != kind or cursor.subject != subject:
        raise InvalidCursor(
            f"the cursor continues another listing, not this {'symbol' if kind == 'ticks' else 'index'}"
        )
    return cursor
