from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from nexanest.ops.migrate import TARGETS, MigrationError, load_migrations, migrate, pending
from nexanest.pipeline.edition import EDITIONS, Edition, detect_edition
from nexanest.pipeline.settings import Settings


def test_every_target_has_ordered_migrations() -> None:
    for target in TARGETS:
        for edition in EDITIONS:
            migrations = load_migrations(target, edition=edition)
            assert migrations, target
            versions = [m.version for m in migrations]
            assert versions == sorted(set(versions))


def _files(tmp_path: Path, *names: str) -> Path:
    (tmp_path / "t").mkdir(parents=True)
    for name in names:
        (tmp_path / "t" / name).write_text(f"-- {name}\nSELECT 1;")
    return tmp_path


def test_each_edition_gets_its_variant_and_shared_files_go_to_both(tmp_path: Path) -> None:
    root = _files(tmp_path, "0001_base.sql", "0002_bars.apache.sql", "0002_bars.timescale.sql", "0003_more.sql")
    apache = load_migrations("t", root, edition="apache")
    timescale = load_migrations("t", root, edition="timescale")
    assert [m.filename for m in apache] == ["0001_base.sql", "0002_bars.apache.sql", "0003_more.sql"]
    assert [m.filename for m in timescale] == ["0001_base.sql", "0002_bars.timescale.sql", "0003_more.sql"]
    assert [(m.name, m.variant) for m in timescale] == [("base", None), ("bars", "timescale"), ("more", None)]
    assert apache[1].sha256 != timescale[1].sha256
    # Without variants the edition does not matter, and need not be given.
    assert load_migrations("t", _files(tmp_path / "x", "0001_base.sql")) == load_migrations(
        "t", tmp_path / "x", edition="timescale"
    )


def test_variants_without_an_edition_are_refused(tmp_path: Path) -> None:
    root = _files(tmp_path, "0001_bars.apache.sql", "0001_bars.timescale.sql")
    with pytest.raises(MigrationError, match="edition of the database decides"):
        load_migrations("t", root)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("0001_bars.timescale.sql",), "no apache variant"),
        (("0001_bars.apache.sql",), "no timescale variant"),
        (("0001_bars.sql", "0001_bars.apache.sql", "0001_bars.timescale.sql"), "share a version"),
        (("0001_bars.apache.sql", "0001_candles.timescale.sql"), "share a version"),
        (("0001_a.sql", "0001_b.sql"), "share a version"),
        (("0001_bars.community.sql",), "NNNN_lower_snake"),
    ],
)
def test_incomplete_or_ambiguous_variants_are_refused(tmp_path: Path, names: tuple[str, ...], message: str) -> None:
    root = _files(tmp_path, *names)
    for edition in EDITIONS:
        with pytest.raises(MigrationError, match=message):
            load_migrations("t", root, edition=edition)


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


def test_a_comment_only_file_is_empty(tmp_path: Path) -> None:
    root = _files(tmp_path, "0001_a.sql")
    (root / "t" / "0002_b.sql").write_text("-- nothing to do on this edition\n\n  -- really\n")
    a, b = load_migrations("t", root)
    assert not a.empty
    assert b.empty


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


def _copy_applied(root: Path, edition_text: dict[str, str] | None = None) -> Path:
    """The timescale migrations as applied, with 0003_ohlcv's variants replaced."""
    (root / "timescale").mkdir(parents=True)
    for migration in load_migrations("timescale", edition="apache"):
        if migration.version < 3:
            (root / "timescale" / migration.filename).write_text(migration.sql)
    for edition in EDITIONS:
        sql = load_migrations("timescale", edition=edition)[2].sql
        (root / "timescale" / f"0003_ohlcv.{edition}.sql").write_text((edition_text or {}).get(edition, sql))
    return root


@pytest.mark.integration
async def test_the_ledger_records_the_variant_and_refuses_a_changed_or_foreign_one(
    migrated: Settings, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(migrated.timescale.admin_dsn.get_secret_value())
    try:
        edition = await detect_edition(conn)
        other: Edition = "timescale" if edition == "apache" else "apache"
        variant = await conn.fetchval("SELECT variant FROM nexanest_migrations WHERE version = 3")
        assert variant == edition
        assert await conn.fetchval("SELECT variant FROM nexanest_migrations WHERE version = 1") is None

        unchanged = _copy_applied(tmp_path / "same", {other: "-- the other edition's file may change freely\n"})
        assert await pending(conn, "timescale", load_migrations("timescale", unchanged, edition=edition)) == []

        edited = _copy_applied(tmp_path / "edited", {edition: "-- edited after it was applied\n"})
        with pytest.raises(MigrationError, match=rf"0003_ohlcv\.{edition}\.sql was applied and has changed since"):
            await pending(conn, "timescale", load_migrations("timescale", edited, edition=edition))

        with pytest.raises(MigrationError, match=f"applied as the {edition} variant.*selects the {other} variant"):
            await pending(conn, "timescale", load_migrations("timescale", unchanged, edition=other))
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
        if await detect_edition(conn) == "apache":  # bars: upserted by the consumer, deleted only by repair
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM ohlcv_1m_rollup WHERE false")
    finally:
        await conn.close()
