"""The test services as containers (testcontainers), where a Docker engine exists.

With ``NEXANEST_TEST_STACK=containers`` the session's ``user_settings`` fixture
(conftest) starts PostgreSQL, TimescaleDB, Redis and Kafka as containers instead
of using the ``deploy/local`` services: the images and first-start scripts of
``deploy/docker-compose.yml``, fresh passwords, host ports picked at start,
everything removed at the end of the session. As on the local stack, the main
TimescaleDB runs the Apache edition (the compose image with
``timescaledb.license = apache``) and a second one the community edition (the
compose image as it is), for the edition tests. The settings are also exported as
``NEXANEST_*`` variables for the session, so the ``nexanest`` processes that tests
start reach the same containers; the conftest fixtures then make the suite's own
``*_test`` databases' settings from them as usual. Tests that stop and start
services with ``deploy/local`` scripts skip on this path.

This project's development machines and CI have no Docker engine, so this path
never runs there: ``tests/test_containers.py`` checks the plan (images, scripts,
ports, settings) without an engine, and the fixture fails, never skips, when the
path is asked for and no engine answers.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from nexanest.pipeline.settings import Settings

REPO: Final = Path(__file__).resolve().parent.parent
COMPOSE_FILE: Final = REPO / "deploy/docker-compose.yml"

#: The variable that picks the path, and its value.
STACK_VARIABLE: Final = "NEXANEST_TEST_STACK"
CONTAINERS: Final = "containers"
#: Where the community-edition TimescaleDB listens on this path (conftest's community fixtures read it).
COMMUNITY_PORT_VARIABLE: Final = "NEXANEST_TEST_COMMUNITY_PORT"


def wanted() -> bool:
    """Whether this session asked for containers instead of the deploy/local services."""
    return os.environ.get(STACK_VARIABLE, "").strip().lower() == CONTAINERS


@dataclass(frozen=True)
class Passwords:
    postgres: str = field(default_factory=lambda: secrets.token_hex(16))
    timescale: str = field(default_factory=lambda: secrets.token_hex(16))
    ingest: str = field(default_factory=lambda: secrets.token_hex(16))
    redis: str = field(default_factory=lambda: secrets.token_hex(16))
    token_secret: str = field(default_factory=lambda: secrets.token_hex(32))  # the services' (env.sh writes one)
    notifications_secret_key: str = field(default_factory=lambda: secrets.token_hex(32))  # seals webhook secrets
    auth_service: str = field(default_factory=lambda: secrets.token_hex(16))
    portfolio_service: str = field(default_factory=lambda: secrets.token_hex(16))
    market_data_service: str = field(default_factory=lambda: secrets.token_hex(16))
    analytics_service: str = field(default_factory=lambda: secrets.token_hex(16))
    notifications_service: str = field(default_factory=lambda: secrets.token_hex(16))
    monitor: str = field(default_factory=lambda: secrets.token_hex(16))  # the exporters' (compose/*-init.sh)


@dataclass(frozen=True)
class ContainerPlan:
    """One service's container, as data: what ``start`` hands testcontainers."""

    service: str
    image: str
    port: int  # the service's port inside the container
    env: dict[str, str]
    #: (file in this repository, path in the container), mounted read-only.
    mounts: tuple[tuple[Path, str], ...] = ()
    command: list[str] | None = None
    #: A host port fixed before start (Kafka must advertise the address clients use).
    host_port: int | None = None
    #: What the container logs once it serves, and how many times: PostgreSQL logs
    #: it twice when init scripts run (their temporary server's, then the real one's).
    ready_log: str = ""
    ready_times: int = 1
    #: Commands run in the container once it is ready.
    after_start: tuple[tuple[str, ...], ...] = ()


def community_port() -> int | None:
    """The community-edition TimescaleDB's port on this path, None elsewhere."""
    value = os.environ.get(COMMUNITY_PORT_VARIABLE)
    return int(value) if wanted() and value else None


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compose_images() -> dict[str, str]:
    """Service name -> image, as ``deploy/docker-compose.yml`` has them (read, not parsed
    as YAML: the project has no YAML dependency, and the file's layout is simple)."""
    images: dict[str, str] = {}
    service = None
    for line in COMPOSE_FILE.read_text().splitlines():
        if m := re.match(r"^  ([a-z-]+):\s*$", line):
            service = m.group(1)
        elif (m := re.match(r"^    image:\s*(\S+)", line)) and service is not None:
            images[service] = m.group(1)
    return images


def plan(passwords: Passwords, kafka_port: int) -> list[ContainerPlan]:
    """The four containers, as the compose file runs them."""
    images = compose_images()
    pg_ready = "database system is ready to accept connections"
    timescale_env = {
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": passwords.timescale,
        "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256",
        "NEXANEST_TIMESCALE_PASSWORD": passwords.timescale,
        "NEXANEST_INGEST_PASSWORD": passwords.ingest,
        "NEXANEST_PORTFOLIO_SERVICE_PASSWORD": passwords.portfolio_service,
        "NEXANEST_MARKET_DATA_SERVICE_PASSWORD": passwords.market_data_service,
        "NEXANEST_ANALYTICS_SERVICE_PASSWORD": passwords.analytics_service,
        "NEXANEST_MONITOR_PASSWORD": passwords.monitor,
        "TIMESCALEDB_TELEMETRY": "off",
    }
    timescale_init = ((REPO / "deploy/compose/timescale-init.sh", "/docker-entrypoint-initdb.d/20-nexanest.sh"),)
    return [
        ContainerPlan(
            "postgres",
            images["postgres"],
            5432,
            {
                "POSTGRES_USER": "nexanest",
                "POSTGRES_PASSWORD": passwords.postgres,
                "POSTGRES_DB": "auth",
                "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256",
                "NEXANEST_AUTH_SERVICE_PASSWORD": passwords.auth_service,
                "NEXANEST_PORTFOLIO_SERVICE_PASSWORD": passwords.portfolio_service,
                "NEXANEST_ANALYTICS_SERVICE_PASSWORD": passwords.analytics_service,
                "NEXANEST_NOTIFICATIONS_SERVICE_PASSWORD": passwords.notifications_service,
                "NEXANEST_MONITOR_PASSWORD": passwords.monitor,
            },
            mounts=((REPO / "deploy/compose/postgres-init.sh", "/docker-entrypoint-initdb.d/10-databases.sh"),),
            ready_log=pg_ready,
            ready_times=2,
        ),
        ContainerPlan(
            "timescaledb",
            images["timescaledb"],
            5432,
            timescale_env,
            mounts=timescale_init,
            # The suite's main cluster is the Apache edition, as deploy/local's on 5433.
            command=["postgres", "-c", "timescaledb.license=apache"],
            ready_log=pg_ready,
            ready_times=2,
        ),
        ContainerPlan(
            "timescaledb-community",
            images["timescaledb"],
            5432,
            timescale_env,
            mounts=timescale_init,
            ready_log=pg_ready,
            ready_times=2,
            # The community fixture recreates its test database as the owner role,
            # as deploy/local/timescaledb-community.sh allows it to.
            after_start=(("psql", "-U", "postgres", "-c", "ALTER ROLE timescale CREATEDB"),),
        ),
        ContainerPlan(
            "redis",
            images["redis"],
            6379,
            {"NEXANEST_REDIS_PASSWORD": passwords.redis},
            # As the compose file: the password goes from the environment into a
            # mode-600 config file, never onto a command line (`ps` shows those).
            command=[
                "sh",
                "-c",
                "umask 077 &&"
                " printf 'requirepass %s\\ndatabases 16\\n' \"$NEXANEST_REDIS_PASSWORD\" >/tmp/redis.conf &&"
                " chown redis /tmp/redis.conf &&"
                " exec docker-entrypoint.sh redis-server /tmp/redis.conf",
            ],
            ready_log="Ready to accept connections",
        ),
        ContainerPlan(
            "kafka",
            images["kafka"],
            9092,
            {
                "KAFKA_NODE_ID": "1",
                "KAFKA_PROCESS_ROLES": "broker,controller",
                "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
                "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{kafka_port}",
                "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
                "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
                "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
                "KAFKA_NUM_PARTITIONS": "6",
            },
            host_port=kafka_port,
            ready_log="Kafka Server started",
        ),
    ]


def service_environment(ports: dict[str, int], kafka_port: int, passwords: Passwords) -> dict[str, str]:
    """The ``NEXANEST_*`` variables that point the pipeline (and the community
    fixtures) at the containers; environment variables win over ``.env``."""
    pg, ts = ports["postgres"], ports["timescaledb"]
    env = {
        f"NEXANEST_POSTGRES__{db.upper()}_DSN": f"postgresql://nexanest:{passwords.postgres}@127.0.0.1:{pg}/{db}"
        for db in ("auth", "portfolio", "analytics", "notifications")
    }
    return env | {
        "NEXANEST_TIMESCALE__ADMIN_DSN": f"postgresql://timescale:{passwords.timescale}@127.0.0.1:{ts}/timescale",
        "NEXANEST_TIMESCALE__DSN": f"postgresql://nexanest_ingest:{passwords.ingest}@127.0.0.1:{ts}/timescale",
        "NEXANEST_REDIS__URL": f"redis://:{passwords.redis}@127.0.0.1:{ports['redis']}",
        "NEXANEST_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "NEXANEST_SERVICES__TOKEN_SECRET": passwords.token_secret,
        "NEXANEST_NOTIFICATIONS__SECRET_KEY": passwords.notifications_secret_key,
        "NEXANEST_SERVICES__AUTH_DSN": f"postgresql://nexanest_auth:{passwords.auth_service}@127.0.0.1:{pg}/auth",
        "NEXANEST_SERVICES__PORTFOLIO_DSN": (
            f"postgresql://nexanest_portfolio:{passwords.portfolio_service}@127.0.0.1:{pg}/portfolio"
        ),
        "NEXANEST_SERVICES__PORTFOLIO_SNAPSHOTS_DSN": (
            f"postgresql://nexanest_portfolio:{passwords.portfolio_service}@127.0.0.1:{ts}/timescale"
        ),
        "NEXANEST_SERVICES__MARKET_DATA_DSN": (
            f"postgresql://nexanest_market_data:{passwords.market_data_service}@127.0.0.1:{ts}/timescale"
        ),
        "NEXANEST_SERVICES__ANALYTICS_DSN": (
            f"postgresql://nexanest_analytics:{passwords.analytics_service}@127.0.0.1:{pg}/analytics"
        ),
        "NEXANEST_SERVICES__ANALYTICS_TIMESCALE_DSN": (
            f"postgresql://nexanest_analytics:{passwords.analytics_service}@127.0.0.1:{ts}/timescale"
        ),
        "NEXANEST_SERVICES__NOTIFICATIONS_DSN": (
            f"postgresql://nexanest_notifications:{passwords.notifications_service}@127.0.0.1:{pg}/notifications"
        ),
        COMMUNITY_PORT_VARIABLE: str(ports["timescaledb-community"]),
        # The containers' processes announce nothing to a local Prometheus (pipeline/targets.py).
        "NEXANEST_METRICS__TARGETS_DIR": "",
    }


def ready_pattern(spec: ContainerPlan) -> re.Pattern[str]:
    """Matches a log holding ``ready_log`` ``ready_times`` times."""
    return re.compile("(?s)" + ".*".join([re.escape(spec.ready_log)] * spec.ready_times))


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    try:
        import docker  # testcontainers' client
    except ImportError as exc:  # pragma: no cover - a dev dependency
        return f"the docker client is not installed ({exc})"
    try:
        docker.from_env().ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None


@contextmanager
def container_stack() -> Iterator[Settings]:
    """Start the four containers, yield settings that reach them (also exported as
    ``NEXANEST_*`` variables), stop and remove them on exit. Raises when Docker
    is unavailable or a container does not get ready."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    reason = docker_unavailable()
    if reason is not None:
        raise RuntimeError(f"{STACK_VARIABLE}={CONTAINERS} needs a Docker engine: {reason}")
    passwords, kafka_port = Passwords(), free_port()
    with ExitStack() as running:
        ports: dict[str, int] = {}
        for spec in plan(passwords, kafka_port):
            container = DockerContainer(spec.image).with_envs(**spec.env)
            if spec.host_port is None:
                container.with_exposed_ports(spec.port)
            else:
                container.with_bind_ports(spec.port, spec.host_port)
            for source, target in spec.mounts:
                container.with_volume_mapping(str(source), target, "ro")
            if spec.command is not None:
                container.with_command(spec.command)
            container.waiting_for(LogMessageWaitStrategy(ready_pattern(spec)).with_startup_timeout(180))
            container.start()
            running.callback(container.stop)
            for command in spec.after_start:
                code, output = container.exec(list(command))
                if code != 0:
                    # Bytes unless streamed (docker's ExecResult types both).
                    text = (output if isinstance(output, bytes) else b"".join(output)).decode()
                    raise RuntimeError(f"{spec.service}: {' '.join(command)} failed: {text[-1000:]}")
            ports[spec.service] = spec.host_port or int(container.get_exposed_port(spec.port))
        env = service_environment(ports, kafka_port, passwords)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        running.callback(_restore, saved)
        yield Settings(_env_file=None)  # type: ignore[call-arg]


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def container_settings() -> Iterator[Settings]:
    """The session's services as containers (``stack`` asks for it when ``wanted()``)."""
    with container_stack() as settings:
        yield settings
