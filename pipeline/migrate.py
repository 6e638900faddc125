"""Versioned SQL migrations for the TimescaleDB and the four service databases.

Files live in ``schemas/sql/<target>/NNNN_name.sql``. Each target database keeps a
``nexanest_migrations`` table of what was applied and the SHA-256 of each file.
A migration runs in one transaction (unless its first line is
``-- nexanest: no-transaction``, which statements such as creating a continuous
aggregate need), and an applied file whose text changed is refused: the fix is a
new migration, never an edit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from nexanest.pipeline.errors import ConfigurationError
from nexanest.pipeline.settings import Settings

TARGETS = ("timescale", "auth", "portfolio", "analytics", "notifications")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_NO_TRANSACTION = "-- nexanest: no-transaction"

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS nexanest_migrations (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    sha256     TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(ConfigurationError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(_NO_TRANSACTION)


@dataclass(frozen=True, slots=True)
class PlanStep:
    target: str
    migration: Migration


def sql_root() -> Path:
    return Path(str(resources.files("nexanest.schemas") / "sql"))


def load_migrations(target: str, root: Path | None = None) -> list[Migration]:
    directory = (root or sql_root()) / target
    if not directory.is_dir():
        raise MigrationError(f"no migrations directory for target {target!r}: {directory}")
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a version number")
    return found


def target_dsn(settings: Settings, target: str) -> SecretStr:
    if target == "timescale":
        return settings.timescale.admin_dsn
    dsns = settings.postgres.dsns()
    if target not in dsns:
        raise MigrationError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    return dsns[target]


async def pending(conn: asyncpg.Connection, target: str, migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations not yet applied; raises if an applied one was edited."""
    await conn.execute(_LEDGER_DDL)
    applied = {r["version"]: r for r in await conn.fetch("SELECT version, name, sha256 FROM nexanest_migrations")}
    todo: list[Migration] = []
    for migration in migrations:
        row = applied.get(migration.version)
        if row is None:
            todo.append(migration)
        elif row["sha256"] != migration.sha256:
            raise MigrationError(
                f"{target}: migration {migration.version:04d}_{migration.name} was applied and has "
                "changed since; write a new migration instead of editing an applied one"
            )
    return todo


async def migrate(
    settings: Settings, targets: Sequence[str] = TARGETS, *, dry_run: bool = False, root: Path | None = None
) -> list[PlanStep]:
    """Apply (or with ``dry_run`` only list) the pending migrations of each target."""
    plan: list[PlanStep] = []
    for target in targets:
        migrations = load_migrations(target, root)
        conn = await asyncpg.connect(target_dsn(settings, target).get_secret_value(), timeout=10)
        try:
            # One migrator at a time per database, even across machines.
            await conn.execute("SELECT pg_advisory_lock(hashtext('nexanest_migrations'))")
            for migration in await pending(conn, target, migrations):
                plan.append(PlanStep(target, migration))
                if dry_run:
                    continue
                if migration.transactional:
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
        "INSERT INTO nexanest_migrations (version, name, sha256) VALUES ($1, $2, $3)",
        migration.version,
        migration.name,
        migration.sha256,
    )
