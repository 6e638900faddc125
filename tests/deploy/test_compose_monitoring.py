"""The compose stack's monitoring (deploy/docker-compose.yml): Prometheus,
Alertmanager, the PostgreSQL and Redis exporters and the monitoring role of the
first-start scripts. There is no Docker engine here, so the stack is checked,
never run: ``promtool check config`` of its Prometheus config, ``amtool
check-config`` of its Alertmanager config (tests/deploy/test_alertmanager.py),
and the wiring between the files (every target a compose service, every
mounted file present, the role made as deploy/local makes it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from nexanest.pipeline.settings import MetricsSettings, ServicesSettings
from tests.prometheus import promtool

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy/docker-compose.yml"
PROMETHEUS_YML = REPO / "deploy/prometheus/prometheus.yml"
INIT_SCRIPTS = [REPO / "deploy/compose/postgres-init.sh", REPO / "deploy/compose/timescale-init.sh"]


def services() -> dict[str, str]:
    """Compose service name -> its block of lines."""
    text = COMPOSE.read_text()
    section = text[text.index("\nservices:\n") : text.index("\nvolumes:\n")]
    blocks = re.split(r"(?m)^  ([a-z][a-z-]*):\s*$", section)
    return dict(zip(blocks[1::2], blocks[2::2], strict=True))


def test_the_compose_prometheus_config_passes_promtool_with_its_alertmanager(tmp_path: Path) -> None:
    text = PROMETHEUS_YML.read_text()
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/rules/*.yml", str(REPO / "deploy/prometheus/rules/*.yml")))
    checked = subprocess.run(
        [promtool(), "check", "config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ["alertmanager:9093"]' in text


def test_every_compose_scrape_target_is_a_compose_service_or_the_host() -> None:
    text = PROMETHEUS_YML.read_text()
    ours = services()
    for host, port in re.findall(r'"([a-z.-]+):(\d+)"', text):
        assert host in ("localhost", "host.docker.internal") or host in ours, host
        if host in ours and host != "prometheus":
            # The port the container serves on (the host side of `ports` may differ).
            assert re.search(rf'"127\.0\.0\.1:\d+:{port}"', ours[host]), (host, port)


def test_the_compose_jobs_are_the_local_stack_s() -> None:
    """Same job names and cluster labels as deploy/local/prometheus.sh, so rules and dashboards read both."""
    script = (REPO / "deploy/local/prometheus.sh").read_text()
    compose = PROMETHEUS_YML.read_text()
    local_jobs = set(re.findall(r"- job_name: ([\w-]+)", script)) - {"timescaledb-community"}
    assert set(re.findall(r"- job_name: ([\w-]+)", compose)) == local_jobs
    for cluster in ("postgres", "timescaledb"):
        assert f"labels: {{cluster: {cluster}}}" in compose


def host_targets(job: str) -> dict[str, int]:
    """The compose Prometheus' targets on the host in ``job``: component -> port."""
    text = PROMETHEUS_YML.read_text()
    block = text[text.index(f"- job_name: {job}\n") :]
    block = block[: block.find("\n\n")]
    found = re.findall(r'- targets: \["host\.docker\.internal:(\d+)"\]\n\s+labels: \{component: ([\w-]+)\}', block)
    return {component: int(port) for port, component in found}


def test_the_compose_prometheus_scrapes_every_host_process_on_its_default_port() -> None:
    """The port map of the pipeline (quotes' 9107 too) and every service (8001-8005),
    as deploy/local/prometheus.sh scrapes them; the host reached through the gateway."""
    m = MetricsSettings()
    assert host_targets("nexanest") == {c: m.port_for(c) for c in ("consumer", "producer", "run", "quotes")}
    assert host_targets("services") == ServicesSettings().ports()
    assert 'extra_hosts: ["host.docker.internal:host-gateway"]' in services()["prometheus"]
    # On Linux the gateway does not reach processes on 127.0.0.1 (their default):
    # the README says which settings move them onto the bridge's address.
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Grafana dashboards") :]
    section = section[: section.index("\n## ")]
    for setting in ("NEXANEST_METRICS__HOST", "NEXANEST_SERVICES__HOST", "host-gateway"):
        assert setting in section, setting
    assert "NEXANEST_METRICS__HOST and NEXANEST_SERVICES__HOST" in PROMETHEUS_YML.read_text()


def test_compose_runs_alertmanager_and_the_exporters_with_the_monitoring_role() -> None:
    ours = services()
    assert {"prometheus", "alertmanager", "postgres-exporter", "timescaledb-exporter", "redis-exporter"} <= set(ours)
    assert "./compose/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in ours["alertmanager"]
    assert (REPO / "deploy/compose/alertmanager.yml").is_file()
    assert '"--cluster.listen-address="' in ours["alertmanager"]  # no gossip port
    for exporter, database in (("postgres-exporter", "postgres"), ("timescaledb-exporter", "timescaledb")):
        block = ours[exporter]
        assert f"DATA_SOURCE_URI: {database}:5432/postgres" in block
        assert "DATA_SOURCE_USER: nexanest_monitor" in block
        assert "DATA_SOURCE_PASS: ${NEXANEST_MONITOR_PASSWORD:?" in block
        # The database's first start gets the password it gives the role.
        assert "NEXANEST_MONITOR_PASSWORD: ${NEXANEST_MONITOR_PASSWORD:?" in ours[database]
    assert "REDIS_PASSWORD: ${NEXANEST_REDIS_PASSWORD:?" in ours["redis-exporter"]
    for name, block in ours.items():  # loopback only, as deploy/local
        for mapping in re.findall(r'"([\d.]*:?\d+:\d+)"', block):
            assert mapping.startswith("127.0.0.1:"), (name, mapping)


def test_the_first_start_scripts_make_the_monitoring_role_as_deploy_local_does() -> None:
    local = (REPO / "deploy/local/lib.sh").read_text()
    assert 'pg_ensure_role "$port" nexanest_monitor "$monitor_pw" "CONNECTION LIMIT 5"' in local
    assert "GRANT pg_monitor TO" in local
    for script in INIT_SCRIPTS:
        text = script.read_text()
        assert "\\getenv monitor_pw NEXANEST_MONITOR_PASSWORD" in text, script.name  # never on a command line
        assert (
            "format('CREATE ROLE nexanest_monitor LOGIN CONNECTION LIMIT 5 PASSWORD %L', :'monitor_pw') \\gexec" in text
        )
        assert "GRANT pg_monitor TO nexanest_monitor;" in text
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert syntax.returncode == 0, syntax.stderr
