from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from nexanest.pipeline.migrate import TARGETS, MigrationError, load_migrations, migrate, pending
from nexanest.pipeline.settings import Settings


def test_every_target_has_ordered_migrations() -> None:
    for target in TARGETS:
        migrations = load_migrations(target)
        assert migrations, target
        assert [m.version for m in migrations] == sorted(m.version for m in migrations)


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "timescale").mkdir()
    (tmp_path / "timescale" / "1_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        load_migrations("timescale", tmp_path)


def test_no_transaction_marker(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "0001_a.sql").write_text("-- nexanest: no-transaction\nSELECT 1;")
    (tmp_path / "t" / "0002_b.sql").write_text("SELECT 1;")
    a, b = load_migrations("t", tmp_path)
    assert not a.transactional
    assert b.transactional


@pytest.mark.integration
async def test_migrate_is_idempotent_and_dry_run_changes_nothing(migrated: Settings) -> None:
    assert await migrate(migrated, dry_run=True) == []
    assert await migrate(migrated) == []


@pytest.mark.integration
async def test_an_applied_migration_that_changed_is_refused(migrated: Settings, tmp_path: Path) -> None:
    (tmp_path / "timescale").mkdir()
    (tmp_path / "timescale" / "0001_market_data.sql").write_text("-- edited after it was applied\n")
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        with pytest.raises(MigrationError, match="changed since"):
            await pending(conn, "timescale", load_migrations("timescale", tmp_path))
    finally:
        await conn.close()


@pytest.mark.integration
async def test_ingest_role_cannot_change_or_delete_market_data(migrated: Settings) -> None:
    conn = await asyncpg.connect(migrated.timescale.dsn.get_secret_value())
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM stock_prices WHERE false")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE stock_prices")
    finally:
        await conn.close()
