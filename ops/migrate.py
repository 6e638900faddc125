"""Versioned SQL migrations for the TimescaleDB and the four service databases.

Files live in ``schemas/sql/<target>/NNNN_name.sql``. Each target database keeps a
``nexanest_migrations`` table of what was applied and the SHA-256 of each file.
A migration runs in one transaction (unless its first line is
``-- nexanest: no-transaction``, which statements such as
``refresh_continuous_aggregate`` need), and an applied file whose text changed
is refused: the fix is a new migration, never an edit.

A no-transaction migration is sent as one query string, and PostgreSQL runs the
statements of a multi-statement query in one implicit transaction; a file that
must run outside a transaction therefore holds a single statement.

**Edition variants.** Where the two TimescaleDB editions need different schema
(continuous aggregates exist only in the community edition), one version may
come as a pair ``NNNN_name.apache.sql`` + ``NNNN_name.timescale.sql`` instead of
one ``NNNN_name.sql``. The migrator asks each database once for its edition
(``pipeline/edition.py``: ``timescale`` for the community license, ``apache``
for anything else, including no TimescaleDB at all) and applies the matching
file; the ledger records which variant ran. A variant that changed after it was
applied is refused like any changed file, and so is a database whose edition no
longer matches the variant it ran (the schema it has is not the one the other
edition needs: that takes a new migration).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import cast

import asyncpg
from pydantic import SecretStr

from nexanest.pipeline.edition import EDITIONS, Edition, detect_edition
from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.settings import Settings

TARGETS = ("timescale", "auth", "portfolio", "analytics", "notifications")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)(?:\.(apache|timescale))?\.sql$")
_NO_TRANSACTION = "-- nexanest: no-transaction"

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS nexanest_migrations (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    sha256     TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- NULL: an edition-independent file; otherwise the edition whose variant ran.
ALTER TABLE nexanest_migrations ADD COLUMN IF NOT EXISTS variant TEXT
"""


class MigrationError(ConfigurationError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    #: The edition this file is the variant for; None for an edition-independent file.
    variant: Edition | None = None

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}{'' if self.variant is None else '.' + self.variant}.sql"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(_NO_TRANSACTION)

    @property
    def empty(self) -> bool:
        """Only ``--`` comments (a variant for an edition that needs nothing);
        PostgreSQL answers such a query with no result, which asyncpg cannot take."""
        return all(not line.strip() or line.lstrip().startswith("--") for line in self.sql.splitlines())


@dataclass(frozen=True, slots=True)
class PlanStep:
    target: str
    migration: Migration


def sql_root() -> Path:
    return Path(str(resources.files("nexanest.schemas") / "sql"))


def load_migrations(target: str, root: Path | None = None, *, edition: Edition | None = None) -> list[Migration]:
    """The migrations of ``target`` in version order, each version resolved to
    the file for ``edition``. Without an edition, a version that comes as
    edition variants raises (there is no edition-independent answer).

    Raises ``MigrationError`` on a misnamed file, a version used twice, or an
    incomplete variant pair.
    """
    directory = (root or sql_root()) / target
    if not directory.is_dir():
        raise MigrationError(f"no migrations directory for target {target!r}: {directory}")
    by_version: dict[int, list[Migration]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: migration files are named NNNN_lower_snake.sql "
                f"(or NNNN_lower_snake.<edition>.sql, edition one of {', '.join(EDITIONS)})"
            )
        variant = cast("Edition | None", match[3])  # the pattern admits only EDITIONS
        migration = Migration(int(match[1]), match[2], path.read_text(encoding="utf-8"), variant)
        by_version.setdefault(migration.version, []).append(migration)
    return [_select(directory, files, edition) for _, files in sorted(by_version.items())]


def _select(directory: Path, files: list[Migration], edition: Edition | None) -> Migration:
    """The one file of a version that applies to ``edition``."""
    names = ", ".join(m.filename for m in files)
    if len(files) == 1 and files[0].variant is None:
        return files[0]
    if any(m.variant is None for m in files) or len({m.name for m in files}) != 1:
        raise MigrationError(f"{directory}: two migrations share a version number: {names}")
    variants = {m.variant: m for m in files}
    missing = [e for e in EDITIONS if e not in variants]
    if missing:
        raise MigrationError(
            f"{directory}: {names} has no {' or '.join(missing)} variant; every edition needs one "
            "(a file holding only a comment is fine where an edition needs nothing)"
        )
    if edition is None:
        raise MigrationError(f"{directory}: {names} are edition variants; the edition of the database decides")
    return variants[edition]


def target_dsn(settings: Settings, target: str) -> SecretStr:
    if target == "timescale":
        return settings.timescale.admin_dsn
    dsns = settings.postgres.dsns()
    if target not in dsns:
        raise MigrationError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    return dsns[target]


async def pending(conn: asyncpg.Connection, target: str, migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations not yet applied; raises if an applied one was edited, or
    ran as another edition's variant than ``migrations`` selects now."""
    await conn.execute(_LEDGER_DDL)
    applied = {
        r["version"]: r for r in await conn.fetch("SELECT version, name, sha256, variant FROM nexanest_migrations")
    }
    todo: list[Migration] = []
    for migration in migrations:
        row = applied.get(migration.version)
        if row is None:
            todo.append(migration)
        elif row["variant"] != migration.variant:
            ran = "the edition-independent file" if row["variant"] is None else f"the {row['variant']} variant"
            now = "an edition-independent file" if migration.variant is None else f"the {migration.variant} variant"
            raise MigrationError(
                f"{target}: migration {migration.version:04d}_{migration.name} was applied as {ran}, "
                f"but this database now selects {now}; the edition changed, or the file was split or merged "
                "after it ran: write a new migration that converts the schema"
            )
        elif row["sha256"] != migration.sha256:
            raise MigrationError(
                f"{target}: migration {migration.filename} was applied and has "
                "changed since; write a new migration instead of editing an applied one"
            )
    return todo


async def migrate(
    settings: Settings, targets: Sequence[str] = TARGETS, *, dry_run: bool = False, root: Path | None = None
) -> list[PlanStep]:
    """Apply (or with ``dry_run`` only list) the pending migrations of each target."""
    plan: list[PlanStep] = []
    for target in targets:
        load_migrations(target, root, edition="apache")  # a malformed directory fails before connecting
        conn = await asyncpg.connect(target_dsn(settings, target).get_secret_value(), timeout=10)
        try:
            # One migrator at a time per database, even across machines.
            await conn.execute("SELECT pg_advisory_lock(hashtext('nexanest_migrations'))")
            migrations = load_migrations(target, root, edition=await detect_edition(conn))
            for migration in await pending(conn, target, migrations):
                plan.append(PlanStep(target, migration))
                if dry_run:
                    continue
                if migration.empty:
                    await _record(conn, migration)
                elif migration.transactional:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await _record(conn, migration)
                else:
                    await conn.execute(migration.sql)
                    await _record(conn, migration)
        finally:
            await conn.close()
    return plan


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO nexanest_migrations (version, name, sha256, variant) VALUES ($1, $2, $3, $4)",
        migration.version,
        migration.name,
        migration.sha256,
        migration.variant,
    )
