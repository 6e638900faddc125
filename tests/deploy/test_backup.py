"""deploy/local/backup.sh and restore.sh (make db-backup, make db-restore): a
backup restores to the same rows, table by table, hypertables and their chunks
included; damaged backups and non-empty databases are refused; retention keeps
the newest backups.

Only scratch databases (``bkp_<test id>_<name>``, created the way the stack
scripts create databases, with the same owner roles, dropped at the end) are
backed up, dropped and restored: never the user's databases nor the suite's
``*_test`` ones, which other tests use at the same time.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from pydantic import SecretStr

from nexanest.consumers.ticks_to_timescale import run_consumer
from nexanest.ops.migrate import migrate
from nexanest.pipeline.settings import IndexDefinition, Settings
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed, symbol_names
from nexanest.producers.publisher import publish_feed
from tests.deploy.superuser import create_scratch_database, database_exists, drop_scratch_database, superuser_sql

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BACKUP_SH = REPO / "deploy/local/backup.sh"
RESTORE_SH = REPO / "deploy/local/restore.sh"
PG_PORT, TS_PORT = 5432, 5433
SERVICE_DATABASES = ("auth", "portfolio", "analytics", "notifications")

#: One line per table: its name, row count and an order-independent checksum (the
#: sum of the first 64 bits of each row's md5). A hypertable's rows are its chunks'.
#: Run as the superuser (TimescaleDB's catalog is not all readable by the owner);
#: the statements are built by the server (format %I/%L), so no name is pasted into SQL here.
_FINGERPRINTS = """
SELECT format('SELECT %L, count(*), coalesce(sum((''x'' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)'
              ' FROM %I.%I AS t', format('%I.%I', n.nspname, c.relname), n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
 ORDER BY 1 \\gexec
"""

Fingerprint = dict[str, tuple[int, int]]

#: TimescaleDB's state of the installation itself, which pg_dump leaves out (the
#: extension does not mark these rows for dumping): its identity (metadata's uuid
#: and install_timestamp: a restored database is a new installation) and the run
#: statistics of its background jobs. Compared apart (metadata's other keys) or not at all.
NOT_DUMPED = frozenset(
    {
        "_timescaledb_catalog.metadata",
        "_timescaledb_internal.bgw_job_stat",
        "_timescaledb_internal.bgw_job_stat_history",
    }
)
_METADATA = (
    "SELECT key, value FROM _timescaledb_catalog.metadata WHERE key NOT IN ('uuid', 'install_timestamp') ORDER BY 1\n"
)


def in_database(dsn: SecretStr, database: str) -> SecretStr:
    return SecretStr(urlunsplit(urlsplit(dsn.get_secret_value())._replace(path=f"/{database}")))


def role_of(dsn: SecretStr) -> str:
    return urlsplit(dsn.get_secret_value()).username or ""


def fingerprint(port: int, database: str) -> Fingerprint:
    """Every table of the database: its own, the chunks and TimescaleDB's catalog."""
    found: Fingerprint = {}
    for line in superuser_sql(port, database, _FINGERPRINTS).splitlines():
        name, count, checksum = line.rsplit("|", 2)
        if name not in NOT_DUMPED:
            found[name] = (int(count), int(checksum))
    assert found, f"no table in {database}"
    return found


@dataclass
class Scratch:
    """The scratch databases of one test and settings that point at them."""

    settings: Settings
    #: (port, database, owner DSN) of each.
    databases: list[tuple[int, str, SecretStr]]

    def targets(self) -> list[str]:
        return [arg for port, db, _ in self.databases for arg in ("--database", f"{port}/{db}")]

    def fingerprints(self) -> dict[str, Fingerprint]:
        return {db: fingerprint(port, db) for port, db, _ in self.databases}

    def drop(self) -> None:
        for port, db, _ in self.databases:
            drop_scratch_database(port, db)


@pytest.fixture
async def scratch(isolated: Settings, test_id: str) -> AsyncIterator[Scratch]:
    """Five empty scratch databases (timescale and the four service databases),
    migrated with the project's migrations, and settings (this test's topics)
    that write into them; dropped afterwards whatever happened."""
    ts, pg = isolated.timescale, isolated.postgres
    names = {target: f"bkp_{test_id}_{target}" for target in ("timescale", *SERVICE_DATABASES)}
    databases = [(TS_PORT, names["timescale"], in_database(ts.admin_dsn, names["timescale"]))]
    databases += [(PG_PORT, names[t], in_database(pg.dsns()[t], names[t])) for t in SERVICE_DATABASES]
    settings = isolated.model_copy(
        update={
            "timescale": ts.model_copy(
                update={"admin_dsn": databases[0][2], "dsn": in_database(ts.dsn, names["timescale"])}
            ),
            "postgres": pg.model_copy(
                update={f"{t}_dsn": in_database(pg.dsns()[t], names[t]) for t in SERVICE_DATABASES}
            ),
        }
    )
    found = Scratch(settings, databases)
    try:
        create_scratch_database(TS_PORT, names["timescale"], role_of(ts.admin_dsn), timescaledb=True,
                                connect=(role_of(ts.dsn),))  # fmt: skip
        for t in SERVICE_DATABASES:
            create_scratch_database(PG_PORT, names[t], role_of(pg.dsns()[t]), timescaledb=False)
        await migrate(settings)
        yield found
    finally:
        found.drop()


def differences(
    before: dict[str, Fingerprint], after: dict[str, Fingerprint]
) -> dict[str, tuple[tuple[int, int] | None, tuple[int, int] | None]]:
    """``database.table: (before, after)`` for every table whose rows differ, or that exists on one side only."""
    found = {}
    for db in before.keys() | after.keys():
        was, now = before.get(db, {}), after.get(db, {})
        for table in was.keys() | now.keys():
            if was.get(table) != now.get(table):
                found[f"{db}.{table}"] = (was.get(table), now.get(table))
    return found


def listing(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def run_script(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=900, check=False)


async def load_market_data(scratch: Scratch, test_id: str, ticks: int) -> None:
    """A short real ingest: synthetic ticks over the last five hours (so several
    one-hour chunks) published to this test's topic, and the real consumer (rollups,
    offsets, system events, a market index) writing them into the scratch database."""
    index = IndexDefinition(name=f"IDX{test_id[:6].upper()}", method="price_weighted", symbols=symbol_names(3))
    settings = scratch.settings.model_copy(update={"indices": [index]})
    hours = 5
    config = SyntheticConfig(
        symbols=20,
        rate=ticks / (hours * 3600),
        count=ticks,
        seed=13,
        start_ns=time.time_ns() - hours * 3600 * 10**9,
        source=f"backup-{test_id}",
        paced=False,
    )
    assert await publish_feed(settings.kafka, SyntheticFeed(config), config.source) == ticks
    stats = await run_consumer(settings, asyncio.Event(), until_idle_s=3.0)
    assert (stats.written, stats.rejected) == (ticks, 0)


async def load_service_data(scratch: Scratch) -> None:
    """A few rows in the service databases, as their owner role, acting for one user."""
    user, portfolio = uuid.uuid4(), uuid.uuid4()
    by_name = {db.rsplit("_", 1)[1]: dsn for _, db, dsn in scratch.databases}
    conn = await asyncpg.connect(by_name["auth"].get_secret_value(), timeout=10)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.user_id', $1, true)", str(user))
            await conn.execute(
                "INSERT INTO users (user_id, email, password_hash) VALUES ($1, $2, 'x')", user, f"{user}@example.com"
            )
            await conn.execute("INSERT INTO user_profiles (user_id, timezone) VALUES ($1, 'Europe/Paris')", user)
    finally:
        await conn.close()
    conn = await asyncpg.connect(by_name["portfolio"].get_secret_value(), timeout=10)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.user_id', $1, true)", str(user))
            await conn.execute(
                "INSERT INTO portfolios (portfolio_id, user_id, name) VALUES ($1, $2, 'main')", portfolio, user
            )
            await conn.execute(
                "INSERT INTO holdings (portfolio_id, user_id, symbol, quantity, cost_basis)"
                " VALUES ($1, $2, 'SYN0001', 10, 1234.5)",
                portfolio,
                user,
            )
    finally:
        await conn.close()


async def test_backup_drop_restore_gives_back_every_row_of_every_table(
    scratch: Scratch, tmp_path: Path, test_id: str
) -> None:
    ticks = 20_000
    await load_market_data(scratch, test_id, ticks)
    await load_service_data(scratch)
    before = scratch.fingerprints()
    ts_db = scratch.databases[0][1]
    metadata = superuser_sql(TS_PORT, ts_db, _METADATA)
    assert "timescaledb_version" in metadata
    ts = before[ts_db]
    chunks = [t for t in ts if t.startswith("_timescaledb_internal._hyper_")]
    # What the round trip must carry: ticks in several chunks, bars, offsets, events, an index.
    assert ts["public.stock_prices"][0] == ticks
    conn = await asyncpg.connect(scratch.databases[0][2].get_secret_value(), timeout=10)
    try:
        tick_chunks = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'stock_prices'"
        )
    finally:
        await conn.close()
    assert tick_chunks >= 5  # five hours of one-hour chunks
    for table in ("public.ohlcv_1m_rollup", "public.ingest_offsets", "public.system_events", "public.market_indices"):
        assert ts[table][0] > 0, table
    auth = before[scratch.databases[1][1]]
    assert auth["public.users"][0] == 1
    assert auth["public.nexanest_migrations"][0] >= 1

    started = time.perf_counter()
    made = run_script(BACKUP_SH, "--dest", tmp_path, "--keep", "0", *scratch.targets())
    backup_s = time.perf_counter() - started
    assert made.returncode == 0, made.stderr
    folder = Path(made.stdout.strip())
    assert folder.parent == tmp_path
    assert sorted(p.name for p in listing(folder)) == sorted(
        ["MANIFEST", "SHA256SUMS", *(f"{db}@{port}.dump" for port, db, _ in scratch.databases)]
    )
    manifest = (folder / "MANIFEST").read_text()
    assert f"database\t{TS_PORT}\t{ts_db}\ttimescale\t{ts_db}@{TS_PORT}.dump\t" in manifest
    assert f"grant\t{TS_PORT}\t{ts_db}\tnexanest_ingest\tCONNECT" in manifest
    # The backup recorded itself in the database it backed up (after its dump).
    conn = await asyncpg.connect(scratch.databases[0][2].get_secret_value(), timeout=10)
    try:
        done = await conn.fetchval(
            "SELECT details->>'path' FROM system_events WHERE event_type = 'backup_done' AND component = 'ops.backup'"
        )
    finally:
        await conn.close()
    assert done == str(folder)

    scratch.drop()
    assert not any(database_exists(port, db) for port, db, _ in scratch.databases)
    started = time.perf_counter()
    restored = run_script(RESTORE_SH, folder, "--create")
    restore_s = time.perf_counter() - started
    assert restored.returncode == 0, restored.stderr
    after = scratch.fingerprints()
    changed = differences(before, after)
    assert not changed, "\n".join(f"{table}: {was} -> {now}" for table, (was, now) in sorted(changed.items()))
    assert superuser_sql(TS_PORT, ts_db, _METADATA) == metadata
    # Still a working TimescaleDB database: hypertables, and a new tick lands in a chunk.
    conn = await asyncpg.connect(scratch.databases[0][2].get_secret_value(), timeout=10)
    try:
        assert await conn.fetchval("SHOW timescaledb.restoring") == "off"
        assert await conn.fetchval("SELECT count(*) FROM timescaledb_information.chunks") == len(chunks)
        hypertables = await conn.fetch("SELECT hypertable_name FROM timescaledb_information.hypertables")
        assert {"stock_prices", "system_events", "market_indices"} <= {r[0] for r in hypertables}
        await conn.execute(
            "INSERT INTO stock_prices (time, symbol, price, size, exchange, source, source_seq, kafka_partition,"
            " kafka_offset) VALUES (now(), 'SYN0001', 1, 1, 'X', 'after-restore', 1, 0, 0)"
        )
        acl = await conn.fetchval("SELECT datacl::text FROM pg_database WHERE datname = current_database()")
        assert "nexanest_ingest=c/" in acl  # the database grant, given back by --create
    finally:
        await conn.close()
    size_mb = sum(p.stat().st_size for p in listing(folder)) / 1e6
    print(
        f"\nbackup of {len(scratch.databases)} databases ({ticks:,} ticks, {len(chunks)} chunks, "
        f"{sum(n for fp in before.values() for n, _ in fp.values()):,} rows in {sum(map(len, before.values()))} "
        f"tables): {size_mb:.1f} MB in {backup_s:.1f} s; drop; restore in {restore_s:.1f} s; identical"
    )


async def test_restore_refuses_damaged_backups_non_empty_and_missing_databases(
    scratch: Scratch, tmp_path: Path
) -> None:
    targets = scratch.targets()[:2]  # the timescale database only: quick
    port, ts_db, _ = scratch.databases[0]
    made = run_script(BACKUP_SH, "--dest", tmp_path, "--no-event", *targets)
    assert made.returncode == 0, made.stderr
    folder = Path(made.stdout.strip())
    before = fingerprint(port, ts_db)

    # The database still holds what was backed up: refused, saying what it holds.
    refused = run_script(RESTORE_SH, folder)
    assert refused.returncode == 1
    assert f"{ts_db} (port {port}) is not empty: it holds" in refused.stderr
    assert "public.ingest_offsets" in refused.stderr  # the first five names, alphabetically
    assert "nothing was changed" in refused.stderr

    # A dump with one byte changed: refused before anything else is looked at.
    dump = folder / f"{ts_db}@{port}.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    damaged = run_script(RESTORE_SH, folder, "--create")
    assert damaged.returncode == 1
    assert "checksum verification failed" in damaged.stderr
    assert fingerprint(port, ts_db) == before

    # Missing without --create: refused; the database stays missing.
    made = run_script(BACKUP_SH, "--dest", tmp_path, "--no-event", *targets)
    assert made.returncode == 0, made.stderr
    drop_scratch_database(port, ts_db)
    missing = run_script(RESTORE_SH, made.stdout.strip())
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    assert not database_exists(port, ts_db)

    # Created empty the stack's way (owner, extension, grants): restored without --create.
    create_scratch_database(port, ts_db, "timescale", timescaledb=True, connect=("nexanest_ingest",))
    restored = run_script(RESTORE_SH, made.stdout.strip())
    assert restored.returncode == 0, restored.stderr
    assert fingerprint(port, ts_db) == before


async def test_retention_keeps_the_newest_complete_backups_only(scratch: Scratch, tmp_path: Path) -> None:
    targets = scratch.targets()[2:4]  # one small service database
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    made = []
    for _ in range(3):
        done = run_script(BACKUP_SH, "--dest", tmp_path, "--keep", "2", "--no-event", *targets)
        assert done.returncode == 0, done.stderr
        made.append(Path(done.stdout.strip()))
    assert [p for p in listing(tmp_path) if p != unrelated] == made[1:]
    assert f"retention (2 kept): removing {made[0]}" in done.stderr
    assert unrelated.is_dir()  # not a backup: never removed


def test_the_scripts_explain_themselves() -> None:
    for script, words in ((BACKUP_SH, ("--keep", "timescaledb_pre_restore", "SHA256SUMS")),
                          (RESTORE_SH, ("EMPTY", "--create", "timescaledb_post_restore"))):  # fmt: skip
        shown = run_script(script, "--help")
        assert shown.returncode == 2
        assert all(word in shown.stderr for word in words), shown.stderr
    bad = run_script(RESTORE_SH, "/nonexistent/backup")
    assert bad.returncode == 1
    assert "is not a folder" in bad.stderr
