"""``OffsetStore`` against the real TimescaleDB: claims fence stale writers."""

from __future__ import annotations

import asyncpg
import pytest
from structlog.testing import capture_logs

from nexanest.pipeline.errors import FencedError
from nexanest.pipeline.offsets import OffsetStore
from nexanest.pipeline.settings import Settings
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


async def test_a_stored_offset_that_went_back_is_refused_and_re_read(
    timescale_pool: asyncpg.Pool, migrated: Settings, test_id: str
) -> None:
    """A failover of an asynchronously replicated database can lose the last
    committed transactions, rows and offsets together. The consumer's next store
    finds the offset behind the one it committed: it is refused like a fence (the
    batch rolls back), reported, and a new claim resumes from the database's offset,
    so the lost ticks are read again."""
    source = f"regress-{test_id}"
    group = f"g-{test_id}"
    offsets = OffsetStore(timescale_pool, group)
    sink = TimescaleSink(timescale_pool, offsets)
    assert await offsets.claim("ticks", [0]) == {0: None}
    for seq in range(2):
        sink.write([(make_tick(source, seq), 0, seq)])
        offsets.advance({("ticks", 0): seq + 1})
        assert await sink.flush() == 1

    # What the failover does: the second transaction never happened on the new primary.
    # (As the owner: the ingest role may not delete.)
    owner = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        async with owner.transaction():
            await owner.execute("DELETE FROM stock_prices WHERE source = $1 AND source_seq = 1", source)
            await owner.execute(
                "UPDATE ingest_offsets SET next_offset = 1 WHERE consumer_group = $1 AND topic = 'ticks'", group
            )
    finally:
        await owner.close()

    sink.write([(make_tick(source, 2), 0, 2)])
    offsets.advance({("ticks", 0): 3})
    with capture_logs() as logs, pytest.raises(FencedError) as fenced:
        await sink.flush()
    assert fenced.value.partitions == [("ticks", 0)]
    assert [e["offsets_back"] for e in logs if e["event"] == "stored_offsets_regressed"] == [{"ticks[0]": 1}]
    sink.discard()
    assert await offsets.stored_offsets("ticks") == {0: 1}  # the refused batch moved nothing

    assert await offsets.claim("ticks", [0]) == {0: 1}  # the runner re-claims: re-read from offset 1
    sink.write([(make_tick(source, 1), 0, 1), (make_tick(source, 2), 0, 2)])
    offsets.advance({("ticks", 0): 3})
    assert await sink.flush() == 2
    rows = await timescale_pool.fetch("SELECT source_seq FROM stock_prices WHERE source = $1 ORDER BY 1", source)
    assert [r["source_seq"] for r in rows] == [0, 1, 2]


async def test_records_taken_under_an_old_claim_are_fenced_after_our_own_reclaim(
    timescale_pool: asyncpg.Pool, test_id: str
) -> None:
    """A consumer loses a partition, another writes it, and the first claims it back
    while a batch taken under its first claim still waits: that batch is fenced (it
    would write the other's rows again and move the offset backwards), and the
    re-claim resumes where the other stopped."""
    source = f"reclaim-{test_id}"
    group = f"g-{test_id}"
    first_offsets = OffsetStore(timescale_pool, group)
    first = TimescaleSink(timescale_pool, first_offsets)
    taken_under = (await first_offsets.claim("ticks", [0]), first_offsets.generation(("ticks", 0)))[1]
    assert taken_under is not None

    other_offsets = OffsetStore(timescale_pool, group)
    other = TimescaleSink(timescale_pool, other_offsets)
    await other_offsets.claim("ticks", [0])
    other.write([(make_tick(source, 0), 0, 0), (make_tick(source, 1), 0, 1)])
    other_offsets.advance({("ticks", 0): 2})
    assert await other.flush() == 2

    first_offsets.release([("ticks", 0)])
    assert await first_offsets.claim("ticks", [0]) == {0: 2}  # claimed back: resume after the other's rows
    first.write([(make_tick(source, 0), 0, 0)])  # taken before it lost the partition
    first_offsets.advance({("ticks", 0): 1}, generations={("ticks", 0): taken_under})
    with pytest.raises(FencedError) as fenced:
        await first.flush()
    assert fenced.value.generations == {("ticks", 0): taken_under}
    first.discard()
    rows = await timescale_pool.fetch("SELECT source_seq FROM stock_prices WHERE source = $1 ORDER BY 1", source)
    assert [r["source_seq"] for r in rows] == [0, 1]
    assert await first_offsets.stored_offsets("ticks") == {0: 2}
