"""Wire schemas of the pipeline: what crosses Kafka, as msgspec Structs.

This package is a leaf: it imports nothing else from the project, so a feed
adapter or a service in another repository can depend on it alone.

Prices and sizes are fixed-point integers with nine decimal places ("e9"
units): ``price_e9 = 187_250_000_000`` is 187.25. Integers are exact on every
platform and in every language (no binary floating point, no decimal library
needed to produce them), and 9 places cover sub-satoshi crypto prices while an
int64 still holds prices up to 9.2 billion. In the database they become
``NUMERIC(20, 9)``, so sums and checksums stay exact too.

Timestamps are integer nanoseconds since the Unix epoch, with the unit in the
name (``exchange_ts_ns``).

The encoding is MessagePack (see ``schemas/ticks.py`` for the measurement that
chose it and for the exact byte layout another language must produce).
"""

from nexanest.schemas.events import EventType, Severity, SystemEvent
from nexanest.schemas.ticks import (
    PRICE_SCALE,
    TICK_SCHEMA_VERSION,
    Tick,
    decode_tick,
    encode_tick,
    format_e9,
    parse_e9,
)

__all__ = [
    "PRICE_SCALE",
    "TICK_SCHEMA_VERSION",
    "EventType",
    "Severity",
    "SystemEvent",
    "Tick",
    "decode_tick",
    "encode_tick",
    "format_e9",
    "parse_e9",
]
