"""Shared fixtures. Integration tests talk to the real services.

The ``stack`` fixture makes sure PostgreSQL, TimescaleDB, Redis and Kafka answer
on loopback, starting them once per session with the project's own
``deploy/local/stack.sh`` when they do not; if they cannot be started the run
fails (it never skips). Each test then works in its own topics, consumer group,
Redis key prefix and ``source`` tag, so tests never see each other's data.

The tests never touch the user's data (what ``.env`` points at, and ``make
run`` uses): every fixture hands out settings for the suite's own databases
(``timescale_test``, ``auth_test``, ...: ``separate_databases``), Redis databases
10-14 and topics, and the same settings go into this process's environment, so a
child ``nexanest`` (or a ``Settings()`` built from ``.env``) gets them too.
``tests/test_user_data_untouched.py``, run last, proves it against a snapshot
taken before the first test.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as redis
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from nexanest.ops.migrate import migrate
from nexanest.pipeline.kafka import ensure_topics
from nexanest.pipeline.settings import (
    Settings,
    load_settings,
    namespace_environment,
    namespaced,
    separate_databases,
)
from tests import containers
from tests.containers import container_settings  # noqa: F401 - the fixture user_settings asks for
from tests.user_data import Snapshot, take_snapshot

REPO = Path(__file__).resolve().parent.parent
SERVICE_PORTS = {"postgres": 5432, "timescaledb": 5433, "redis": 6379, "kafka": 9092}
#: The proof that the user's data is untouched: it runs last, after every other test.
USER_DATA_TEST = "tests/test_user_data_untouched.py"
#: This session's topics, groups and Redis key prefix, and the prefix of every
#: test's own (``test.<test_id>``): deleted at the end of the session.
SESSION_NAMESPACE = f"test.session-{uuid.uuid4().hex[:10]}"
_test_ids: set[str] = set()
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """No process of the session announces itself to the user's Prometheus
    (``pipeline/targets.py``): not a ``main()`` run in this process, not a child
    (``namespace_environment`` says the same), whatever ``.env`` says. A test that
    wants an announcement sets ``NEXANEST_METRICS__TARGETS_DIR`` to a directory of its own."""
    os.environ["NEXANEST_METRICS__TARGETS_DIR"] = ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the user-data proof behind every other test, whatever the order of collection."""
    items.sort(key=lambda item: item.nodeid.startswith(USER_DATA_TEST))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def user_settings(request: pytest.FixtureRequest) -> Settings:
    """The settings of the user's own stack (``.env`` and the environment as the
    session found it): read only to prove the suite leaves that data alone. With
    ``NEXANEST_TEST_STACK=containers`` the "user's stack" is the session's
    containers (``tests/containers.py``)."""
    if containers.wanted():
        return cast(Settings, request.getfixturevalue("container_settings"))
    env_file = REPO / ".env"
    if not env_file.exists():
        pytest.fail(f"{env_file} is missing: run `make env` (deploy/local/env.sh)", pytrace=False)
    return load_settings(env_file)


@pytest.fixture(scope="session")
def stack(user_settings: Settings) -> Iterator[Settings]:
    """Settings for the suite's own databases, Redis databases and topics, with
    the services up. They are put into this process's environment for the
    session as well (``namespace_environment``): a child process or a
    ``Settings()`` read from ``.env`` then reaches the test data, never the user's."""
    down = [] if containers.wanted() else [name for name, port in SERVICE_PORTS.items() if not _port_open(port)]
    if down:
        _run_stack_script("up", *down)
    settings = namespaced(separate_databases(user_settings), SESSION_NAMESPACE)
    missing = _run_apart(_missing_databases(settings))
    if missing and not containers.wanted():
        # Made by the start of the stack scripts (a cluster started before they
        # created them lacks them): it takes the superuser, which only they have.
        _run_stack_script("up", "postgres", "timescaledb")
        missing = _run_apart(_missing_databases(settings))
    if missing:
        pytest.fail(
            f"the test databases {', '.join(missing)} are missing: deploy/local/stack.sh up creates them "
            "(for docker compose: deploy/compose/*-init.sh, on a fresh volume)",
            pytrace=False,
        )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in namespace_environment(settings).items():
            patch.setenv(name, value)
        yield settings


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a loop of its own in another thread: from a sync
    session fixture, without touching the event loop pytest-asyncio keeps for the tests."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _run_stack_script(*args: str) -> None:
    result = subprocess.run(
        [str(REPO / "deploy/local/stack.sh"), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    down = [name for name, port in SERVICE_PORTS.items() if not _port_open(port)]
    if result.returncode != 0 or down:
        pytest.fail(
            f"deploy/local/stack.sh {' '.join(args)} failed{' (down: ' + ', '.join(down) + ')' if down else ''}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
            pytrace=False,
        )


async def _missing_databases(settings: Settings) -> list[str]:
    dsns = [settings.timescale.admin_dsn, *settings.postgres.dsns().values()]
    missing = []
    for dsn in dsns:
        try:
            conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
        except asyncpg.InvalidCatalogNameError:
            missing.append(dsn.get_secret_value().rsplit("/", 1)[-1])
        else:
            await conn.close()
    return missing


@pytest.fixture(scope="session")
async def migrated(stack: Settings) -> AsyncIterator[Settings]:
    """``stack`` with the test databases migrated and the session's topics made.
    At the end of the session the session's and every test's topics are deleted,
    so the broker does not collect thousands of them over many runs."""
    await migrate(stack)
    await ensure_topics(stack.kafka)
    yield stack
    await _delete_test_topics(stack)


async def _delete_test_topics(settings: Settings) -> None:
    """Delete the topics of this session and of its tests (only theirs: other
    sessions may be running against the same broker)."""
    prefixes = (f"{SESSION_NAMESPACE}.", *(f"test.{test_id}." for test_id in _test_ids))
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers, client_id="nexanest-test-cleanup")
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
def user_data_before(request: pytest.FixtureRequest) -> Snapshot | None:
    """The user's data before the first test, when the proof that it is left
    alone runs in this session (not in a unit-only or a focused run)."""
    if not any(item.nodeid.startswith(USER_DATA_TEST) for item in request.session.items):
        return None
    request.getfixturevalue("stack")  # the services must be up
    return _run_apart(take_snapshot(request.getfixturevalue("user_settings")))


@pytest.fixture
def test_id() -> str:
    test_id = uuid.uuid4().hex[:10]
    _test_ids.add(test_id)
    return test_id


@pytest.fixture
async def isolated(migrated: Settings, test_id: str) -> AsyncIterator[Settings]:
    """Settings with this test's own topics, group and Redis key prefix. Other
    tests' recent ticks share symbol names, so quotes are not rebuilt from them
    into this test's keys (the rebuild is tested on its own). Its Redis keys
    (quotes, index quotes, cached bars) are removed afterwards.

    A service found down fails the test at once: a consumer would otherwise retry
    against it until the test's timeout, and every later test with it."""
    down = [] if containers.wanted() else [name for name, port in SERVICE_PORTS.items() if not _port_open(port)]
    if down:
        pytest.fail(f"{', '.join(down)} down before the test started (left stopped by an earlier test?)", pytrace=False)
    yield namespaced(migrated, f"test.{test_id}", quote_rebuild_window_s=0.0)
    for db in {migrated.redis.db_quotes, migrated.redis.db_analytics}:
        client = redis.Redis.from_url(migrated.redis.url.get_secret_value(), db=db)
        try:
            keys = [k async for k in client.scan_iter(match=f"test.{test_id}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture(scope="session")
async def timescale_pool(migrated: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool as the ingest role: tests see the database with the pipeline's rights."""
    pool = await asyncpg.create_pool(migrated.timescale.dsn.get_secret_value(), min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture
async def quotes_redis(migrated: Settings, test_id: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(migrated.redis.url.get_secret_value(), db=migrated.redis.db_quotes)
    yield client
    keys = []
    for pattern in (f"test:{test_id}:*", f"test.{test_id}:*"):
        keys += [k async for k in client.scan_iter(match=pattern)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


# --- the TimescaleDB community edition (issue 9, part 6) ----------------------
# Edition-specific tests run against the edition they are for: the Apache cluster
# above (5433) and the community cluster (timescaledb.license = 'timescale', 5434,
# deploy/local/timescaledb-community.sh). On the community cluster the tests use
# their own database, recreated empty and migrated once per session, never the
# cluster's `timescale` database.

COMMUNITY_PORT = 5434
COMMUNITY_TEST_DATABASE = "timescale_test"


def community_dsn(dsn: SecretStr, database: str) -> SecretStr:
    """``dsn`` (the same roles and passwords as on the Apache cluster) moved to the
    community cluster's ``database``."""
    url = urlsplit(dsn.get_secret_value())
    host = url.netloc.rsplit("@", 1)
    port = containers.community_port() or COMMUNITY_PORT  # NEXANEST_TEST_STACK=containers: its container
    netloc = f"{host[0]}@127.0.0.1:{port}" if len(host) == 2 else f"127.0.0.1:{port}"
    return SecretStr(urlunsplit(url._replace(netloc=netloc, path=f"/{database}")))


@pytest.fixture(scope="session")
def community_stack(stack: Settings) -> Settings:
    """The community cluster answers (started with stack.sh when not; a failure, never a skip)."""
    if containers.wanted():  # started with the other containers
        return stack
    if not _port_open(COMMUNITY_PORT):
        result = subprocess.run(
            [str(REPO / "deploy/local/stack.sh"), "up", "timescaledb-community"],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if result.returncode != 0 or not _port_open(COMMUNITY_PORT):
            pytest.fail(
                "could not start timescaledb-community with deploy/local/stack.sh up:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
                pytrace=False,
            )
    return stack


@pytest.fixture(scope="session")
async def community(community_stack: Settings) -> Settings:
    """Settings whose TimescaleDB is a fresh, migrated ``timescale_test`` database on
    the community cluster (the other services as in ``migrated``). Fresh each session,
    so tests of a first run (maintain on a new database) see one."""
    stack = community_stack
    admin = community_dsn(stack.timescale.admin_dsn, COMMUNITY_TEST_DATABASE)
    settings = stack.model_copy(
        update={
            "timescale": stack.timescale.model_copy(
                update={"admin_dsn": admin, "dsn": community_dsn(stack.timescale.dsn, COMMUNITY_TEST_DATABASE)}
            )
        }
    )
    conn = await asyncpg.connect(community_dsn(stack.timescale.admin_dsn, "postgres").get_secret_value(), timeout=10)
    try:
        if await conn.fetchval("SELECT current_setting('timescaledb.license', true)") not in (None, "timescale"):
            pytest.fail(f"port {COMMUNITY_PORT} is not the community edition", pytrace=False)
        await conn.execute(f'DROP DATABASE IF EXISTS "{COMMUNITY_TEST_DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{COMMUNITY_TEST_DATABASE}"')
        # As deploy/local makes every database: no CONNECT or TEMP for PUBLIC, only for the roles.
        await conn.execute(f'REVOKE ALL ON DATABASE "{COMMUNITY_TEST_DATABASE}" FROM PUBLIC')
        for role in ("nexanest_ingest", "nexanest_portfolio", "nexanest_market_data", "nexanest_analytics"):
            await conn.execute(f'GRANT CONNECT ON DATABASE "{COMMUNITY_TEST_DATABASE}" TO {role}')
    finally:
        await conn.close()
    conn = await asyncpg.connect(admin.get_secret_value(), timeout=10)
    try:
        await conn.execute("SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS timescaledb")
        assert await conn.fetchval("SHOW timescaledb.license") == "timescale"
    finally:
        await conn.close()
    await migrate(settings, ("timescale",))
    return settings


@pytest.fixture(scope="session")
async def community_pool(community: Settings) -> AsyncIterator[asyncpg.Pool]:
    """As ``timescale_pool``, on the community test database."""
    pool = await asyncpg.create_pool(community.timescale.dsn.get_secret_value(), min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def community_admin_pool(community: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The owner role on the community test database (refreshes, repair, policies)."""
    pool = await asyncpg.create_pool(community.timescale.admin_dsn.get_secret_value(), min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()
