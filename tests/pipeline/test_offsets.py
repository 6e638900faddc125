"""``OffsetStore`` against the real TimescaleDB: claims fence stale writers."""

from __future__ import annotations

import asyncpg
import pytest

from nexanest.pipeline.errors import FencedError
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.sinks.timescale import TimescaleSink
from tests.pipeline.sinks.test_timescale import make_tick

pytestmark = pytest.mark.integration


async def test_a_fenced_writer_commits_nothing(timescale_pool: asyncpg.Pool, test_id: str) -> None:
    """A consumer that lost its partition to another cannot write a batch for it afterwards."""
    source = f"fence-{test_id}"
    group = f"g-{test_id}"
    stale_offsets = OffsetStore(timescale_pool, group)
    stale = TimescaleSink(timescale_pool, stale_offsets)
    await stale_offsets.claim("ticks", [0])
    stale.write([(make_tick(source, 0), 0, 0)])
    stale_offsets.advance({("ticks", 0): 1})
    assert await stale.flush() == 1

    owner_offsets = OffsetStore(timescale_pool, group)

    owner = TimescaleSink(timescale_pool, owner_offsets)
    assert await owner_offsets.claim("ticks", [0]) == {0: 1}  # the new owner resumes where the old one stopped

    stale.write([(make_tick(source, 1), 0, 1)])
    stale_offsets.advance({("ticks", 0): 2})
    with pytest.raises(FencedError) as fenced:
        await stale.flush()
    assert fenced.value.partitions == [("ticks", 0)]
    stale.discard()

    owner.write([(make_tick(source, 1), 0, 1)])
    owner_offsets.advance({("ticks", 0): 2})
    assert await owner.flush() == 1
    rows = await timescale_pool.fetch("SELECT source_seq FROM stock_prices WHERE source = $1 ORDER BY 1", source)
    assert [r["source_seq"] for r in rows] == [0, 1]
    assert await owner_offsets.stored_offsets("ticks") == {0: 2}
