from __future__ import annotations

import asyncpg
import pytest

from nexanest.pipeline.edition import detect_edition, edition_of
from nexanest.pipeline.settings import Settings


def test_only_the_community_license_is_the_timescale_edition() -> None:
    assert edition_of("timescale") == "timescale"
    assert edition_of("apache") == "apache"
    assert edition_of(None) == "apache"  # no TimescaleDB at all: what works everywhere


@pytest.mark.integration
async def test_the_setting_is_read_and_a_missing_one_is_not_an_error(migrated: Settings) -> None:
    timescale = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    postgres = await asyncpg.connect(migrated.postgres.auth_dsn.get_secret_value())
    try:
        expected = edition_of(await timescale.fetchval("SHOW timescaledb.license"))
        assert await detect_edition(timescale) == expected
        assert await detect_edition(postgres) == "apache"  # plain PostgreSQL 15, no such setting
    finally:
        await timescale.close()
        await postgres.close()
