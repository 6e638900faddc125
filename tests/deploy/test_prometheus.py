"""Prometheus in the local stack (deploy/local/prometheus.sh) and the alert rules
(deploy/prometheus).

Unit: ``promtool check rules`` and ``promtool test rules`` on every rule file,
every alert with a case that fires and one that stays quiet, a changed
threshold caught by the cases, every alert documented. promtool comes from
Debian's ``prometheus`` package (``prometheus.sh install``); without it these
tests fail, they never skip.

Unit: the generated configuration finds the project's processes by the files
they announce (pipeline/targets.py), with no static target per port.

Integration: the script's Prometheus and exporters on loopback only, every
exporter target healthy through the least-privilege monitoring role, a real
consumer and a real service announcing themselves while they run (withdrawn at
SIGTERM, left by SIGKILL), no target of the stack's own jobs down after a start,
a consumer found through a targets file and its lag read back through
Prometheus' API, no secret on a command line, and Debian's own services kept
from starting.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from nexanest.pipeline.settings import Settings, namespace_environment
from nexanest.producers.feeds.synthetic import SyntheticConfig, SyntheticFeed
from nexanest.producers.publisher import publish_feed
from tests.deploy.test_secrets import command_lines, env_secrets
from tests.processes import interrupt
from tests.prometheus import api_body, free_ports, promtool, wait_until, write_targets
from tests.services.served import served

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_SH = REPO / "deploy/local/prometheus.sh"
RULES = sorted((REPO / "deploy/prometheus/rules").glob("*.yml"))
RULE_TESTS = sorted((REPO / "deploy/prometheus/tests").glob("*.yml"))
#: Loopback ports of Prometheus and its exporters (prometheus.sh).
PORTS = {
    "prometheus": 9090,
    "alertmanager": 9095,
    "postgres-exporter": 9187,
    "timescaledb-exporter": 9188,
    "redis-exporter": 9121,
}
#: The product's clusters (job postgres; the community cluster has a job of its own).
PG_UP = 'pg_up{job="postgres"}'
#: The community cluster's exporter, beside that cluster only (make community-up).
COMMUNITY_EXPORTER_PORT = 9189


def alerts_of(path: Path) -> list[str]:
    return re.findall(r"(?m)^\s*- alert: (\w+)\s*$", path.read_text())


def cases_of(path: Path) -> tuple[set[str], set[str]]:
    """The alerts a promtool test file expects to fire somewhere, and those it expects quiet somewhere."""
    firing: set[str] = set()
    quiet: set[str] = set()
    alert = None
    for line in path.read_text().splitlines():
        if found := re.match(r"\s*alertname: (\w+)\s*$", line):
            alert = found[1]
        elif found := re.match(r"\s*exp_alerts:\s*(.*)$", line):
            assert alert is not None, line
            (quiet if found[1].strip() == "[]" else firing).add(alert)
    return firing, quiet


def run_promtool(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, argv)], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def test_every_rule_file_passes_promtool_check_rules() -> None:
    assert {p.name for p in RULES} == {"pipeline.yml", "infrastructure.yml", "services.yml"}
    checked = run_promtool("check", "rules", *RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") == len(RULES)


def test_every_rule_passes_its_promtool_unit_tests() -> None:
    tested = run_promtool("test", "rules", *RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    alerts = [a for path in RULES for a in alerts_of(path)]
    assert len(alerts) == len(set(alerts)) == 13
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        f, q = cases_of(path)
        firing |= f
        quiet |= q
    assert firing == set(alerts)
    assert quiet == set(alerts)
    # Each test file covers one rule file, and together they cover all.
    covered = {m for path in RULE_TESTS for m in re.findall(r"(?m)^\s*- \.\./rules/(\S+\.yml)$", path.read_text())}
    assert covered == {p.name for p in RULES}


def test_a_changed_threshold_fails_the_cases(tmp_path: Path) -> None:
    """The cases pin the thresholds: the lag alert at 300 s instead of 30 s no longer fires where it must."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for path in RULES:
        shutil.copy(path, tmp_path / "rules" / path.name)
    for path in RULE_TESTS:
        shutil.copy(path, tmp_path / "tests" / path.name)
    pipeline = tmp_path / "rules/pipeline.yml"
    text = pipeline.read_text()
    assert 'max by (topic, partition) (nexanest_consumer_lag_seconds{topic!~".*backfill"}) > 30\n' in text
    pipeline.write_text(
        text.replace(
            '(nexanest_consumer_lag_seconds{topic!~".*backfill"}) > 30\n', "(nexanest_consumer_lag_seconds) > 300\n"
        )
    )
    tested = run_promtool("test", "rules", "tests/pipeline_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "NexanestConsumerLagHigh" in tested.stdout + tested.stderr


def test_every_alert_is_documented_with_its_threshold() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Alerts") :]
    for alert in (a for path in RULES for a in alerts_of(path)):
        assert re.search(rf"^\| `{alert}` \|[^|]+\|[^|]+\|[^|]+\|", table, re.MULTILINE), alert


def test_the_services_rule_reads_the_metric_the_services_will_export() -> None:
    services = (REPO / "deploy/prometheus/rules/services.yml").read_text()
    assert 'nexanest_http_requests_total{status=~"5.."}' in services
    assert "sum by (service)" in services
    others = "".join(p.read_text() for p in RULES if p.name != "services.yml")
    assert "nexanest_http_requests_total" not in others


# --- the running Prometheus ------------------------------------------------------


def api(path: str, **query: str) -> Any:
    body = api_body(path, **query)
    assert body["status"] == "success", body
    return body["data"]


def targets() -> list[dict[str, Any]]:
    return list(api("targets")["activeTargets"])


def state_dir() -> Path:
    """$NEXANEST_STATE_DIR as deploy/local/lib.sh picks it."""
    if os.environ.get("NEXANEST_STATE_DIR"):
        return Path(os.environ["NEXANEST_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/nexanest")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "nexanest"


def health(job: str) -> dict[str, str]:
    return {
        t["labels"].get("component") or t["labels"].get("cluster") or t["labels"]["instance"]: t["health"]
        for t in targets()
        if t["labels"]["job"] == job
    }


def value_of(query: str) -> dict[str, float]:
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in api("query", query=query)["result"]}


@pytest.mark.integration
def test_prometheus_watches_the_databases_and_redis_through_its_exporters(prometheus: str) -> None:
    wait_until("both PostgreSQL exporters up", lambda: health("postgres") == {"postgres": "up", "timescaledb": "up"})
    wait_until("the Redis exporter up", lambda: list(health("redis").values()) == ["up"])
    wait_until("Prometheus scraping itself", lambda: list(health("prometheus").values()) == ["up"])
    # The exporters reach their services (not only answer themselves).
    pg_up = wait_until("pg_up of both clusters", lambda: value_of(PG_UP) if len(value_of(PG_UP)) == 2 else None)
    assert sorted(pg_up.values()) == [1.0, 1.0]
    assert {json.loads(k)["cluster"] for k in pg_up} == {"postgres", "timescaledb"}
    assert list(value_of("redis_up").values()) == [1.0]
    sizes = value_of('pg_database_size_bytes{cluster="timescaledb", datname="timescale"}')
    assert len(sizes) == 1
    assert next(iter(sizes.values())) > 0
    # Every alert rule of the repository is loaded.
    loaded = {r["name"] for g in api("rules")["groups"] for r in g["rules"] if r["type"] == "alerting"}
    assert loaded == {a for path in RULES for a in alerts_of(path)}


@pytest.mark.integration
def test_prometheus_sends_alerts_to_the_stack_s_alertmanager(prometheus: str) -> None:
    active = wait_until(
        "Alertmanager among Prometheus' alertmanagers", lambda: api("alertmanagers")["activeAlertmanagers"]
    )
    assert "http://127.0.0.1:9095/api/v2/alerts" in {a["url"] for a in active}
    wait_until("Alertmanager scraped", lambda: list(health("alertmanager").values()) == ["up"])
    status = subprocess.run([str(PROMETHEUS_SH), "status"], capture_output=True, text=True, timeout=60, check=False)
    assert re.search(r"(?m)^alertmanager +up +version \S+ +port 9095 ", status.stdout), status.stdout


@pytest.mark.integration
def test_the_community_cluster_has_its_own_exporter_and_job(prometheus: str, community_stack: Settings) -> None:
    """make community-up: its exporter on 9189, scraped as job timescaledb-community,
    reaches the cluster as the monitoring role; prometheus.sh status shows it."""
    wait_until(
        "the community exporter's target up",
        lambda: health("timescaledb-community") == {"timescaledb-community": "up"},
        60.0,
    )
    pg_up = wait_until(
        "pg_up of the community cluster",
        lambda: value_of('pg_up{job="timescaledb-community", cluster="timescaledb-community"}') or None,
    )
    assert list(pg_up.values()) == [1.0]
    status = subprocess.run([str(PROMETHEUS_SH), "status"], capture_output=True, text=True, timeout=60, check=False)
    assert re.search(r"(?m)^tsc-exporter +up .* port 9189 +watches TimescaleDB community 5434$", status.stdout), (
        status.stdout
    )
    # The database-down alerts watch the product's clusters only.
    infrastructure = (REPO / "deploy/prometheus/rules/infrastructure.yml").read_text()
    assert "timescaledb-community" not in infrastructure


#: The jobs of the stack's own configuration (prometheus.sh); tests add targets of
#: their own to job nexanest (files test-*.json, components test-*), left out here.
STACK_JOBS = {"prometheus", "alertmanager", "postgres", "redis", "timescaledb-community", "nexanest", "services"}


def test_the_processes_are_found_by_what_they_announce_not_by_a_port_map(tmp_path: Path) -> None:
    """prometheus.sh's configuration: jobs nexanest and services read the files the
    processes write (pipeline/targets.py), and no process has a static target that
    would be down while it does not run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXANEST_")}
    config = subprocess.run(
        [str(PROMETHEUS_SH), "config"],
        env={**env, "NEXANEST_STATE_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    jobs = dict(re.findall(r"(?ms)^  - job_name: (\S+)\n(.*?)(?=^  - job_name|\Z)", config))
    targets_dir = tmp_path / "prometheus/targets"
    assert f'file_sd_configs:\n      - files: ["{targets_dir}/*.json"]' in jobs["nexanest"]
    assert f'file_sd_configs:\n      - files: ["{targets_dir}/services/*.json"]' in jobs["services"]
    assert "static_configs" not in jobs["nexanest"] + jobs["services"]
    for port in (9107, 9108, 9109, 9110, 8001, 8002, 8003, 8004, 8005):
        assert f":{port}" not in config
    assert (tmp_path / "prometheus/targets/pipeline.json").exists() is False


def announced(directory: Path) -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in directory.glob("*.json")}


def wait_until_or_false(fact: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``fact()`` until it is true (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not fact():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def every_name(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def spawn_consumer(isolated: Settings, port: int, targets_dir: Path) -> asyncio.subprocess.Process:
    """``nexanest consume`` on the test's topics, its metrics on ``port``, announcing into ``targets_dir``."""
    env = {
        **os.environ,
        **namespace_environment(isolated),
        "NEXANEST_METRICS__PORT": str(port),
        "NEXANEST_METRICS__TARGETS_DIR": str(targets_dir),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nexanest.cli.main", "consume",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=REPO,
    )  # fmt: skip


async def wait_for(what: str, fact: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    return await asyncio.to_thread(wait_until, what, fact, timeout_s)


@pytest.mark.integration
async def test_a_consumer_announces_itself_while_it_runs_and_withdraws_when_stopped(
    isolated: Settings, tmp_path: Path
) -> None:
    """The file appears once its /metrics answers, names its component and port,
    and goes at SIGTERM (the clean exit); a consumer killed with SIGKILL cannot
    withdraw, so its target stays (and shows down), as the consumer-down alert expects."""
    stopped_port, killed_port = free_ports(2)
    expected = {
        f"consumer-{port}.json": [{"targets": [f"127.0.0.1:{port}"], "labels": {"component": "consumer"}}]
        for port in (stopped_port, killed_port)
    }
    stopped = await spawn_consumer(isolated, stopped_port, tmp_path)
    killed = await spawn_consumer(isolated, killed_port, tmp_path)
    try:
        await wait_for("both consumers announced", lambda: announced(tmp_path) == expected or None)
        async with httpx.AsyncClient(timeout=10) as http:  # the endpoint announced is the one serving
            for port in (stopped_port, killed_port):
                scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
                assert "nexanest_consumer_messages_total" in scraped.text
        stopped.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(stopped.wait(), 60) == 0
        killed.kill()
        await killed.wait()
        assert announced(tmp_path) == {f"consumer-{killed_port}.json": expected[f"consumer-{killed_port}.json"]}
        assert every_name(tmp_path) == [f"consumer-{killed_port}.json"]  # no temporary file
    finally:
        for proc in (stopped, killed):
            await interrupt(proc)


@pytest.mark.integration
def test_a_service_announces_itself_in_the_services_job_s_directory(migrated: Settings, tmp_path: Path) -> None:
    """``nexanest serve`` announces its HTTP port (where /metrics is) with the
    service's name as ``component``, the label the services dashboard and rules group by."""
    targets_dir = tmp_path / "targets"
    announcing = {"NEXANEST_METRICS__TARGETS_DIR": str(targets_dir)}
    with served("auth", migrated, tmp_path / "auth.log", env=announcing) as url:
        port = int(url.rsplit(":", 1)[1])
        assert announced(targets_dir / "services") == {
            f"auth-{port}.json": [{"targets": [f"127.0.0.1:{port}"], "labels": {"component": "auth"}}]
        }
        assert announced(targets_dir) == {}  # not a target of job nexanest
    assert announced(targets_dir / "services") == {}  # SIGTERM: withdrawn


@pytest.mark.integration
def test_a_freshly_started_stack_has_no_target_down(prometheus: str) -> None:
    """After prometheus.sh start (make stack-up), every target of the stack's own
    jobs is up: a process that is not running is no target at all. Tests' own
    targets (component test-*) are left out; a process killed with SIGKILL leaves
    its file and fails this, by design (its file is named in the message)."""

    def not_up() -> dict[str, str]:
        found = {}
        for t in targets():
            labels = t["labels"]
            if labels["job"] not in STACK_JOBS or labels.get("component", "").startswith("test-"):
                continue
            if t["health"] != "up":
                found[f"{labels['job']}/{labels.get('component', labels['instance'])}"] = t["lastError"] or t["health"]
        return found

    down: dict[str, str] = {}

    def none_down() -> bool:
        down.clear()
        down.update(not_up())
        return not down

    if not wait_until_or_false(none_down, 60.0):
        pytest.fail(f"targets of the stack's jobs not up: {down}", pytrace=False)
    jobs = {t["labels"]["job"] for t in targets()}
    assert {"prometheus", "alertmanager", "postgres", "redis"} <= jobs, jobs
    leftovers = sorted(p.name for p in (state_dir() / "prometheus/targets").glob("pipeline.json"))
    assert leftovers == [], "prometheus.sh removes the static port map an older version wrote"


@pytest.mark.integration
def test_prometheus_and_its_exporters_listen_on_loopback_only(prometheus: str) -> None:
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A":  # LISTEN
                listening.setdefault(int(hex_port, 16), set()).add(address)
    ports = dict(PORTS)
    if (state_dir() / "timescaledb-community/PG_VERSION").exists():
        ports["community-exporter"] = COMMUNITY_EXPORTER_PORT
    for name, port in ports.items():
        found = listening.get(port)
        assert found == {"0100007F"}, f"{name} on {port}: {found}"  # 127.0.0.1 only


@pytest.mark.integration
def test_no_secret_on_the_command_lines_of_prometheus_and_its_exporters(prometheus: str) -> None:
    secrets = env_secrets(REPO / ".env")
    ours = {pid: line for pid, line in command_lines().items() if re.match(rb"\S*prometheus", line)}
    assert len(ours) >= len(PORTS), ours
    assert [pid for pid, line in ours.items() if any(s.encode() in line for s in secrets)] == []


@pytest.mark.integration
def test_debian_s_own_prometheus_services_are_masked(prometheus: str) -> None:
    if os.geteuid() != 0:
        pytest.fail("run as root: only root installs packages (the script masks their units then)", pytrace=False)
    for unit in ("prometheus", "prometheus-alertmanager", "prometheus-postgres-exporter", "prometheus-redis-exporter"):
        path = Path(f"/etc/systemd/system/{unit}.service")
        assert path.is_symlink(), unit
        assert os.readlink(path) == "/dev/null", unit


@pytest.mark.integration
async def test_the_exporters_role_reads_statistics_and_nothing_else(stack: Settings) -> None:
    password = re.findall(r"(?m)^NEXANEST_MONITOR_PASSWORD=(.+)$", (REPO / ".env").read_text())
    assert len(password) == 1, "deploy/local/env.sh adds NEXANEST_MONITOR_PASSWORD"
    for port in (5432, 5433):
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user="nexanest_monitor", password=password[0], database="postgres"
        )
        try:
            role = await conn.fetchrow(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication, rolconnlimit,"
                " ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid"
                "       WHERE m.member = r.oid) AS member_of"
                " FROM pg_roles r WHERE rolname = current_user"
            )
            assert role is not None
            assert not any(
                role[k] for k in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolbypassrls", "rolreplication")
            )
            assert role["member_of"] == ["pg_monitor"]
            assert role["rolconnlimit"] == 5
            # pg_monitor: the sizes and statistics of every database...
            assert await conn.fetchval("SELECT pg_database_size('postgres')") > 0
            # ...but no way into the project's databases (PUBLIC has no CONNECT there).
        finally:
            await conn.close()
        database = "timescale" if port == 5433 else "auth"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(
                host="127.0.0.1", port=port, user="nexanest_monitor", password=password[0], database=database
            )


@pytest.fixture
async def consumer_on_a_port_of_its_own(isolated: Settings) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    (port,) = free_ports(1)
    env = {**os.environ, **namespace_environment(isolated), "NEXANEST_METRICS__PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nexanest.cli.main", "consume",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        yield port, proc
    finally:
        await interrupt(proc)


@pytest.mark.integration
async def test_prometheus_finds_a_consumer_through_a_targets_file_and_reads_its_lag(
    prometheus: str,
    isolated: Settings,
    consumer_on_a_port_of_its_own: tuple[int, asyncio.subprocess.Process],
    test_id: str,
) -> None:
    """A second consumer on a port of its own, announced by a file in targets/ (the
    documented way to add one): Prometheus scrapes it and its lag per partition."""
    port, consumer = consumer_on_a_port_of_its_own
    instance = f"127.0.0.1:{port}"
    targets_file = state_dir() / "prometheus/targets" / f"test-{test_id}.json"
    write_targets(targets_file, [{"targets": [instance], "labels": {"component": f"test-{test_id}"}}])
    try:
        config = SyntheticConfig(symbols=6, rate=0, count=600, seed=3, source=f"prom-{test_id}", paced=False)
        assert await publish_feed(isolated.kafka, SyntheticFeed(config), config.source) == 600

        def lag() -> dict[str, float] | None:
            assert consumer.returncode is None, "the consumer exited"
            found = value_of(f'nexanest_consumer_lag_seconds{{instance="{instance}"}}')
            return found or None

        found = await asyncio.to_thread(wait_until, "the consumer's lag in seconds, through Prometheus", lag, 120.0)
        assert {json.loads(k)["topic"] for k in found} == {isolated.kafka.ticks_topic}
        assert all(0 <= v < 300 for v in found.values()), found
        assert health("nexanest")[f"test-{test_id}"] == "up"
    finally:
        targets_file.unlink()
