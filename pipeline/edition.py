"""Which TimescaleDB edition a database runs.

The community edition (``timescaledb.license = timescale``) has continuous
aggregates, compression and job policies; the Apache-2 edition (Debian's build,
some managed offerings) has hypertables and ``drop_chunks`` but none of those.
Migrations and the consumer branch on it: the first picks the matching
``NNNN_name.<edition>.sql`` variant, the second decides who keeps the OHLCV
bars current.
"""

from __future__ import annotations

from typing import Any, Final, Literal

Edition = Literal["apache", "timescale"]
EDITIONS: Final[tuple[Edition, ...]] = ("apache", "timescale")

# current_setting(..., missing_ok => true) is SHOW without the error: NULL where
# the setting does not exist (no TimescaleDB loaded, e.g. the PostgreSQL service
# databases).
_LICENSE: Final = "SELECT current_setting('timescaledb.license', true)"


def edition_of(license_setting: str | None) -> Edition:
    """``timescale`` only for the community license; anything else, including
    no TimescaleDB at all, gets what works everywhere: ``apache``."""
    return "timescale" if license_setting == "timescale" else "apache"


async def detect_edition(conn: Any) -> Edition:
    """The edition behind ``conn`` (an asyncpg connection or pool): one query."""
    return edition_of(await conn.fetchval(_LICENSE))
