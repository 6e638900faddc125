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


@pytest.mark.integration
@pytest.mark.timescale_license
async def test_each_cluster_runs_its_edition(migrated: Settings, community: Settings) -> None:
    """The Apache cluster (Debian's build) and the community cluster (built from the
    upstream source): the same TimescaleDB version, the edition each is for."""
    versions = []
    for settings, edition in ((migrated, "apache"), (community, "timescale")):
        conn = await asyncpg.connect(settings.timescale.admin_dsn.get_secret_value())
        try:
            assert await detect_edition(conn) == edition
            versions.append(await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"))
        finally:
            await conn.close()
    assert versions[0] == versions[1]
