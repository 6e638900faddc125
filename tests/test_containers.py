"""The testcontainers path (``tests/containers.py``), checked without a Docker engine.

These machines have none, so the containers never start here; what can be
checked is that the plan is the compose stack's (images, first-start scripts and
what they read, Kafka's advertised address), that no secret lands on a command
line, that the settings and the exported variables reach every service, and
that asking for the path without an engine fails instead of skipping.
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Self

import pytest
import testcontainers.core.container
from testcontainers.core.container import BytesExecResult, DockerContainer

from nexanest.pipeline.settings import Settings
from tests import containers
from tests.containers import COMPOSE_FILE, REPO, Passwords, plan, ready_pattern, service_environment

SERVICES = ["postgres", "timescaledb", "timescaledb-community", "redis", "kafka"]


def test_the_plan_runs_the_compose_images_and_the_kafka_of_deploy_local() -> None:
    planned = {p.service: p.image for p in plan(Passwords(), 19092)}
    assert list(planned) == SERVICES
    compose = containers.compose_images()
    assert {s: compose[s.removesuffix("-community")] for s in SERVICES} == planned
    assert planned["timescaledb"].startswith("timescale/timescaledb:")
    (pom_version,) = re.findall(
        r"<kafka.version>(.+)</kafka.version>", (REPO / "deploy/local/kafka/pom.xml").read_text()
    )
    assert planned["kafka"] == f"apache/kafka:{pom_version}"


def test_the_first_start_scripts_are_the_compose_ones_with_what_they_read() -> None:
    compose = COMPOSE_FILE.read_text()
    for spec in plan(Passwords(), 19092):
        for source, target in spec.mounts:
            assert source.is_file()
            # The same script at the same place as compose mounts it.
            assert f"./{source.relative_to(REPO / 'deploy')}:{target}:ro" in compose
            text = source.read_text()
            read = set(re.findall(r"\$\{?([A-Z_]+)", text)) | set(re.findall(r"\\getenv \w+ (\w+)", text))
            assert read <= set(spec.env), f"{source.name} reads {sorted(read - set(spec.env))}, not given"


def test_no_secret_is_on_a_command_line() -> None:
    passwords = Passwords()
    for spec in plan(passwords, 19092):
        command = " ".join(spec.command or [])
        assert not any(pw in command for pw in vars(passwords).values()), spec.service
    (redis,) = [p for p in plan(passwords, 19092) if p.service == "redis"]
    assert redis.env["NEXANEST_REDIS_PASSWORD"] == passwords.redis
    assert "requirepass" in " ".join(redis.command or [])


def test_kafka_advertises_the_host_port_it_is_bound_to() -> None:
    (kafka,) = [p for p in plan(Passwords(), 19092) if p.service == "kafka"]
    assert kafka.host_port == 19092
    assert kafka.env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:19092"
    assert kafka.env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # as the local broker: a typo is an error


def test_postgres_is_ready_only_after_its_init_scripts() -> None:
    (postgres,) = [p for p in plan(Passwords(), 19092) if p.service == "postgres"]
    ready = "LOG:  database system is ready to accept connections\n"
    assert not ready_pattern(postgres).search("initdb...\n" + ready + "running /docker-entrypoint-initdb.d/...\n")
    assert ready_pattern(postgres).search("initdb...\n" + ready + "init process complete\n" + ready)


def test_the_settings_reach_every_service_as_the_env_file_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connection variable deploy/local/env.sh writes is set for the containers
    (a new one there must be added here), and they win over .env."""
    passwords = Passwords()
    ports = {"postgres": 15432, "timescaledb": 15433, "timescaledb-community": 15434, "redis": 16379}
    env = service_environment(ports, 19092, passwords)
    written = set(re.findall(r"^entry (NEXANEST_\w+__\w+) ", (REPO / "deploy/local/env.sh").read_text(), re.MULTILINE))
    assert len(written) >= 10  # env.sh's `entry KEY VALUE` lines were found
    assert set(env) == written | {containers.COMMUNITY_PORT_VARIABLE}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=REPO / ".env.does-not-exist")  # type: ignore[call-arg]
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.timescale.dsn.get_secret_value().endswith(f"{passwords.ingest}@127.0.0.1:15433/timescale")
    assert settings.timescale.admin_dsn.get_secret_value().startswith("postgresql://timescale:")
    assert settings.postgres.portfolio_dsn.get_secret_value().endswith("@127.0.0.1:15432/portfolio")
    assert settings.redis.url.get_secret_value() == f"redis://:{passwords.redis}@127.0.0.1:16379"
    assert settings.services.market_data_dsn.get_secret_value() == (
        f"postgresql://nexanest_market_data:{passwords.market_data_service}@127.0.0.1:15433/timescale"
    )


@pytest.mark.parametrize(
    ("value", "wanted"), [("containers", True), (" Containers ", True), ("", False), ("local", False)]
)
def test_the_path_is_chosen_by_its_variable(monkeypatch: pytest.MonkeyPatch, value: str, wanted: bool) -> None:
    monkeypatch.setenv(containers.STACK_VARIABLE, value)
    assert containers.wanted() is wanted


def test_asking_for_containers_without_an_engine_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "docker_unavailable", lambda: "no Docker engine answers (test)")
    with (
        pytest.raises(RuntimeError, match=r"NEXANEST_TEST_STACK=containers needs a Docker engine"),
        containers.container_stack(),
    ):
        pass


class EngineFree(DockerContainer):
    """testcontainers' own container builder (its real ``with_*`` methods), minus
    the Docker client: records starts and stops instead of running anything."""

    log: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, image: str) -> None:
        self.image = image
        self.env = {}
        self.ports = {}
        self.volumes = {}
        self._command = None
        self._wait_strategy = None

    def start(self) -> Self:
        assert self._wait_strategy is not None
        EngineFree.log.append(("start", self.image))
        return self

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        EngineFree.log.append(("stop", self.image))

    def get_exposed_port(self, port: int) -> int:
        assert self.ports[str(port)] is None, "an exposed port, not a bound one"
        return 40_000 + port + sum(1 for kind, _ in EngineFree.log if kind == "start")  # one per container

    def exec(self, command: str | list[str] | Any) -> BytesExecResult:
        EngineFree.log.append(("exec", " ".join(command)))
        return BytesExecResult(0, b"")


def test_the_stack_starts_each_planned_container_and_exports_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "docker_unavailable", lambda: None)
    monkeypatch.setattr(testcontainers.core.container, "DockerContainer", EngineFree)
    monkeypatch.setenv("NEXANEST_TIMESCALE__DSN", "postgresql://before")
    EngineFree.log.clear()
    built: list[EngineFree] = []
    original_start = EngineFree.start

    def start(self: EngineFree) -> EngineFree:
        built.append(self)
        return original_start(self)

    monkeypatch.setattr(EngineFree, "start", start)
    monkeypatch.setenv(containers.STACK_VARIABLE, "containers")
    with containers.container_stack() as settings:
        kafka_port = int(settings.kafka.bootstrap_servers.rsplit(":", 1)[1])
        assert os.environ["NEXANEST_KAFKA__BOOTSTRAP_SERVERS"] == f"127.0.0.1:{kafka_port}"
        assert settings.timescale.dsn.get_secret_value().endswith("@127.0.0.1:45434/timescale")  # the 2nd started
        assert containers.community_port() == 45435
        assert settings.redis.url.get_secret_value().endswith("@127.0.0.1:46383")
        assert os.environ["NEXANEST_TIMESCALE__DSN"] == settings.timescale.dsn.get_secret_value()
    images = [p.image for p in plan(Passwords(), kafka_port)]
    assert EngineFree.log == [
        ("start", images[0]),
        ("start", images[1]),
        ("start", images[2]),
        ("exec", "psql -U postgres -c ALTER ROLE timescale CREATEDB"),
        ("start", images[3]),
        ("start", images[4]),
    ] + [("stop", i) for i in reversed(images)]
    assert os.environ["NEXANEST_TIMESCALE__DSN"] == "postgresql://before"  # restored
    assert containers.community_port() is None
    _postgres, timescale, community, redis, kafka = built
    assert kafka.ports == {"9092": kafka_port}
    assert timescale.volumes[str(REPO / "deploy/compose/timescale-init.sh")]["bind"].startswith(
        "/docker-entrypoint-initdb.d/"
    )
    assert timescale._command == ["postgres", "-c", "timescaledb.license=apache"]
    assert community._command is None  # the image's own: the community edition
    assert redis._command is not None
