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
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from nexanest.pipeline.kafka import make_admin
from nexanest.pipeline.settings import KafkaSettings, Settings, namespace_environment
from tests import containers

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "deploy/local/kafka-cluster.sh"
REPLICATION = 3
UNKNOWN_TOPIC_OR_PARTITION = UnknownTopicOrPartitionError.errno


def cluster(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = 300) -> str:
    """Run ``kafka-cluster.sh ARGS``; a failure fails the test with what the script said.
    The script names topics and groups after the ``NEXANEST_KAFKA__*`` variables, and the
    session's ``stack`` fixture puts its own namespace in this process's environment:
    those are left out, so ``start`` and ``topics`` make the cluster's own (default)
    names. ``env`` adds the names a call is for (a test's topics and group, for ``grant``)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("NEXANEST_KAFKA__")}
    done = subprocess.run(
        [str(CLUSTER_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**inherited, **(env or {})},
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


async def serving(kafka: KafkaSettings, timeout_s: float = 180) -> None:
    """Wait until the cluster serves what the first tests use: a leader for every
    partition of the ticks topic, and a group coordinator (the first FindCoordinator
    creates ``__consumer_offsets``, three replicas of each partition: slow on a
    loaded machine, and a test must not mistake it for an ACL's answer).

    ``start`` creates the topics and grants only when it launched a node; a cluster
    found running without them (its topics deleted, or started for other names) gets
    them here, once. A cluster that never serves fails with what it last answered,
    its nodes' status and the last warnings of their logs."""
    deadline = time.monotonic() + timeout_s
    healed = False
    while True:
        admin = make_admin(kafka)
        try:
            await admin.start()
            (topic,) = await admin.describe_topics([kafka.ticks_topic])
            if topic["error_code"] == UNKNOWN_TOPIC_OR_PARTITION and not healed:
                healed = True
                await asyncio.to_thread(cluster, "topics")
                await asyncio.to_thread(cluster, "grant")
                continue
            leaderless = [p["partition"] for p in topic["partitions"] if p["leader"] < 0]
            if topic["error_code"] or not topic["partitions"] or leaderless:
                failure = (
                    f"{kafka.ticks_topic}: error code {topic['error_code']},"
                    f" {len(topic['partitions'])} partitions, without a leader: {leaderless}"
                )
            else:
                await admin.find_coordinator("nexanest-cluster-readiness")
                return
        except (KafkaError, OSError) as exc:
            failure = repr(exc)
        finally:
            await admin.close()
        if time.monotonic() > deadline:
            pytest.fail(f"the Kafka cluster did not serve within {timeout_s:.0f}s: {failure}\n{cluster_report()}")
        await asyncio.sleep(1)


def cluster_report() -> str:
    """Each node's status and the warnings and errors among the last lines of its
    logs: what a failing run needs to tell a dead node from a slow one."""
    report = []
    for args in (("status",), *(("logs", str(node)) for node in (1, 2, 3))):
        done = subprocess.run([str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, check=False)
        lines = (done.stdout + done.stderr).splitlines()
        if args[0] == "logs":
            lines = [line[:300] for line in lines if " WARN " in line or " ERROR " in line] or lines[-10:]
        report.append(f"kafka-cluster.sh {' '.join(args)}:\n" + "\n".join(lines))
    return "\n".join(report)
