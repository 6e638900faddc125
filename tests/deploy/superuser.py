"""SQL as a cluster's superuser, the way deploy/local does it: lib.sh's ``pg_sql``
over the unix socket (peer authentication: ``runuser -u postgres`` as root).

For tests that need what only the superuser may do (create and drop scratch
databases, create extensions). Values go in as psql variables (``:'name'`` in
the SQL), never into the SQL text.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "deploy/local/lib.sh"
#: Scratch databases of the tests: only names like these are ever dropped.
SCRATCH = re.compile(r"bkp_[0-9a-f]{10}_[a-z]+")


def superuser_sql(port: int, database: str, sql: str, **variables: str) -> str:
    """Run ``sql`` (psql input; ``\\gexec`` allowed) in ``database`` on the cluster
    at ``port``; returns psql's unaligned, tuples-only output. Raises on an error."""
    argv = ["bash", "-c", '. "$1"; shift; pg_sql "$@"', "superuser_sql", str(LIB), str(port), database, "-At"]
    for name, value in variables.items():
        argv += ["-v", f"{name}={value}"]
    done = subprocess.run(argv, input=sql, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"psql as the superuser on port {port} failed: {done.stderr.strip()}")
    return done.stdout


def create_scratch_database(
    port: int, name: str, owner: str, *, timescaledb: bool, connect: tuple[str, ...] = ()
) -> None:
    """An empty database like the stack's own (deploy/local lib.sh ``pg_ensure_database``:
    owned by ``owner``, no PUBLIC access), the extension where wanted, CONNECT for ``connect``."""
    assert SCRATCH.fullmatch(name), name
    subprocess.run(
        ["bash", "-c", '. "$1"; shift; pg_ensure_database "$@"', "create", str(LIB), str(port), name, owner],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    if timescaledb:
        superuser_sql(port, name, "SET client_min_messages = warning;\nCREATE EXTENSION IF NOT EXISTS timescaledb;\n")
    for role in connect:
        superuser_sql(port, name, "SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'role') \\gexec\n",
                      db=name, role=role)  # fmt: skip


def drop_scratch_database(port: int, name: str) -> None:
    assert SCRATCH.fullmatch(name), name  # never anything but a test's scratch database
    superuser_sql(
        port, "postgres", "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'db') \\gexec\n", db=name
    )


def database_exists(port: int, name: str) -> bool:
    return (
        superuser_sql(port, "postgres", "SELECT count(*) FROM pg_database WHERE datname = :'db'\n", db=name).strip()
        == "1"
    )
