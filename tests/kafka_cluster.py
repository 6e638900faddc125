"""The three-node SASL/SCRAM Kafka cluster of ``deploy/local/kafka-cluster.sh`` for
tests: started once (beside the shared single broker, which is never touched),
stopped at the end when a test started it, and settings that connect to it as one
of its users (``admin``, ``producer``, ``consumer``, ``ops``)."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from nexanest.pipeline.kafka import make_admin
from nexanest.pipeline.settings import KafkaSettings, Settings, namespace_environment
from tests import containers

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "deploy/local/kafka-cluster.sh"
REPLICATION = 3


def cluster(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = 300) -> str:
    """Run ``kafka-cluster.sh ARGS``; a failure fails the test with what the script said.
    ``env`` adds ``NEXANEST_*`` variables (a test's topic and group names for ``grant``)."""
    done = subprocess.run(
        [str(CLUSTER_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        # Never the stdout of `env`: it holds a password.
        pytest.fail(f"kafka-cluster.sh {args[0]} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


@functools.cache
def role_environment(role: str) -> dict[str, str]:
    """The ``NEXANEST_KAFKA__*`` variables that connect to the cluster as ``role``
    (asked once per session: tests poll the cluster with them)."""
    lines = cluster("env", role).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def as_role(settings: Settings, role: str) -> Settings:
    """``settings`` with Kafka moved to the cluster, logged in as ``role``'s user."""
    update = {k.removeprefix("NEXANEST_KAFKA__").lower(): v for k, v in role_environment(role).items()}
    kafka = KafkaSettings.model_validate({**settings.kafka.model_dump(), **update})
    return settings.model_copy(update={"kafka": kafka})


def grant_environment(settings: Settings) -> dict[str, str]:
    """The topic and group names of ``settings``, for ``kafka-cluster.sh grant``/``revoke``."""
    return {k: v for k, v in namespace_environment(settings).items() if k.startswith("NEXANEST_KAFKA__")} | {
        "NEXANEST_KAFKA__PARTITIONS": str(settings.kafka.partitions)
    }


@pytest.fixture(scope="module", name="kafka_cluster")
def kafka_cluster_fixture() -> Iterator[str]:
    """The cluster's bootstrap servers, with all three nodes up. ``start`` is
    idempotent (a running node is left alone, a dead one started); the cluster is
    stopped at the end of the module when this fixture started it. A cluster that
    cannot start fails the tests (in CI too), it never skips them."""
    if containers.wanted():
        pytest.skip("under testcontainers (Docker): the cluster is run by deploy/local's scripts")
    was_up = subprocess.run([str(CLUSTER_SCRIPT), "status"], capture_output=True, check=False).returncode == 0
    cluster("start")
    try:
        asyncio.run(serving(as_role(Settings(kafka=KafkaSettings(), _env_file=None), "admin").kafka))  # type: ignore[call-arg]
        yield cluster("bootstrap").strip()
    finally:
        if not was_up:
            cluster("stop")


async def serving(kafka: KafkaSettings, timeout_s: float = 120) -> None:
    """Wait until the cluster serves what the first tests use: a leader for every
    partition of the ticks topic, and a group coordinator (the first FindCoordinator
    creates ``__consumer_offsets``, three replicas of each partition: slow on a
    loaded machine, and a test must not mistake it for an ACL's answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = make_admin(kafka)
        try:
            await admin.start()
            (topic,) = await admin.describe_topics([kafka.ticks_topic])
            led = topic["partitions"] and all(p["leader"] >= 0 for p in topic["partitions"])
            if led and await admin.find_coordinator("nexanest-cluster-readiness") >= 0:
                return
            failure = f"partitions of {kafka.ticks_topic} without a leader"
        except (KafkaError, OSError) as exc:
            failure = repr(exc)
        finally:
            await admin.close()
        if time.monotonic() > deadline:
            pytest.fail(f"the Kafka cluster did not serve within {timeout_s:.0f}s: {failure}")
        await asyncio.sleep(1)
