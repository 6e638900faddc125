"""Alertmanager in the local stack (deploy/local/prometheus.sh) and its route tree.

Unit: the configuration the script writes (with and without a webhook URL) and
the compose stack's copy pass ``amtool check-config``; ``amtool config routes
test`` sends critical alerts to ``critical`` and everything else to ``warning``;
the URL is the setting ``NEXANEST_ALERTING__WEBHOOK_URL``.

Integration, end to end: a rule file of the test's own, with a short ``for:``,
watches a scrape target of its own that is down (a closed port). The real
Prometheus evaluates it and sends the alert to a real Alertmanager (Debian's
binary, run by the test with the script's configuration, only its webhook URL
pointed at the test), announced to Prometheus through alertmanagers/*.json as
the script documents; the alert arrives at the test's webhook receiver with its
labels and the receiver the route tree picked, and the warning of the same
alertname and job is inhibited. The stack's Alertmanager on 9095 receives the
test's alerts too (label ``nexanest_test``); with no webhook set there, they are
only listed, and they resolve when the test removes its rule.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nexanest.pipeline.settings import Settings
from tests.deploy.test_prometheus import state_dir
from tests.prometheus import api_body, free_ports, wait_until

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_SH = REPO / "deploy/local/prometheus.sh"
COMPOSE_CONFIG = REPO / "deploy/compose/alertmanager.yml"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: deploy/local/prometheus.sh install (prometheus-alertmanager)", pytrace=False)
    return found


def rendered(url: str | None, env: dict[str, str] | None = None) -> str:
    """``prometheus.sh alertmanager-config [URL]``: the configuration the script writes."""
    argv = [str(PROMETHEUS_SH), "alertmanager-config", *([url] if url is not None else [])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def amtool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), *argv], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("url", ["", "http://127.0.0.1:8004/alerts"])
def test_the_script_s_configuration_passes_amtool(tmp_path: Path, url: str) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(rendered(url))
    checked = amtool("check-config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert " - 1 inhibit rules\n - 2 receivers\n" in checked.stdout, checked.stdout
    assert (f'- url: "{url}"' in config.read_text()) == bool(url)
    assert config.read_text().count("webhook_configs:") == (2 if url else 0)


def test_the_compose_configuration_is_the_script_s_and_passes_amtool() -> None:
    """deploy/compose/alertmanager.yml is the script's, with no webhook (so it cannot drift)."""
    checked = amtool("check-config", str(COMPOSE_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert COMPOSE_CONFIG.read_text() == rendered("")


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=NexanestConsumerDown", "job=nexanest"], "critical"),
        (["severity=warning", "alertname=NexanestConsumerLagHigh", "job=nexanest"], "warning"),
        (["alertname=Unlabelled"], "warning"),
    ],
)
def test_the_route_tree_sends_each_severity_to_its_receiver(tmp_path: Path, labels: list[str], receiver: str) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(rendered("http://127.0.0.1:8004/alerts"))
    routed = amtool("config", "routes", "test", f"--config.file={config}", *labels)
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert routed.stdout.strip() == receiver


def test_the_webhook_url_is_the_setting_the_settings_document() -> None:
    url = "http://127.0.0.1:8004/from-the-environment"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXANEST_")}
    env["NEXANEST_ALERTING__WEBHOOK_URL"] = url
    assert f'- url: "{url}"' in rendered(None, env)
    assert Settings(alerting={"webhook_url": url}).alerting.webhook_url is not None  # type: ignore[arg-type]
    assert "NEXANEST_ALERTING__WEBHOOK_URL" in (REPO / "README.md").read_text()


# --- end to end ------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    """Alertmanager's webhook: every POSTed JSON body is kept on the server."""

    server: _ReceiverServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.bodies.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the bodies, not a log."""


class _ReceiverServer(ThreadingHTTPServer):
    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Receiver)
        self.lock = threading.Lock()
        self.bodies: list[dict[str, Any]] = []

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.bodies)


@pytest.fixture
def webhook() -> Iterator[_ReceiverServer]:
    (port,) = free_ports(1)
    server = _ReceiverServer(port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: _ReceiverServer) -> Iterator[str]:
    """Debian's Alertmanager with the script's configuration, posting to ``webhook``: its address."""
    (port,) = free_ports(1)
    config = tmp_path / "alertmanager.yml"
    config.write_text(rendered(f"http://127.0.0.1:{webhook.server_address[1]}/alerts"))
    proc = subprocess.Popen(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("wb"),
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_until("the test's Alertmanager ready", lambda: proc.poll() is None and _ready(address), 30.0)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _alerts(address: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://{address}/api/v2/alerts", timeout=5) as response:
        return list(json.load(response))


def _reload_prometheus() -> None:
    """SIGHUP to the stack's Prometheus: it rereads its rule files (as prometheus.sh does)."""
    os.kill(int((state_dir() / "run/prometheus.pid").read_text()), signal.SIGHUP)


@pytest.mark.integration
def test_a_rule_that_fires_in_prometheus_reaches_a_webhook_through_alertmanager(
    prometheus: str, alertmanager: str, webhook: _ReceiverServer, test_id: str
) -> None:
    (closed,) = free_ports(1)  # nothing listens: the target is down at its first scrape
    component = f"test-{test_id}"
    alertname = "NexanestTestTargetDown"
    prom_dir = state_dir() / "prometheus"
    targets = prom_dir / "targets" / f"test-{test_id}.json"
    announced = prom_dir / "alertmanagers" / f"test-{test_id}.json"
    rules = prom_dir / "rules" / f"test-{test_id}.yml"
    rule = {
        "alert": alertname,
        "expr": f'up{{job="nexanest", component="{component}"}} == 0',
        "for": "2s",
        "annotations": {"summary": "the test's target is down"},
    }
    group = {
        "name": f"nexanest-test-{test_id}",
        "interval": "1s",
        "rules": [
            {**rule, "labels": {"severity": "critical", "nexanest_test": test_id}},
            # The same alertname and job at warning: inhibited by the critical one.
            {**rule, "labels": {"severity": "warning", "nexanest_test": test_id}},
        ],
    }
    try:
        targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{closed}"], "labels": {"component": component}}]))
        announced.write_text(json.dumps([{"targets": [alertmanager]}]))
        rules.write_text(json.dumps({"groups": [group]}))  # JSON is YAML
        _reload_prometheus()

        def ours() -> list[dict[str, Any]]:
            return [
                alert
                for body in webhook.received()
                for alert in body["alerts"]
                if alert["labels"].get("nexanest_test") == test_id
            ]

        wait_until("the alert at the webhook", ours, 60.0)
        bodies = [b for b in webhook.received() if b["commonLabels"].get("nexanest_test") == test_id]
        assert {b["receiver"] for b in bodies} == {"critical"}
        assert {b["status"] for b in bodies} == {"firing"}
        assert bodies[0]["groupLabels"] == {"alertname": alertname, "job": "nexanest"}
        (alert,) = {json.dumps(a["labels"], sort_keys=True): a for a in ours()}.values()
        assert alert["labels"] == {
            "alertname": alertname,
            "severity": "critical",
            "nexanest_test": test_id,
            "job": "nexanest",
            "component": component,
            "instance": f"127.0.0.1:{closed}",
        }
        assert alert["status"] == "firing"
        assert alert["annotations"] == {"summary": "the test's target is down"}
        # The warning reached Alertmanager too, and is held back by the critical one.
        # Prometheus sends this Alertmanager the stack's own alerts too (a real
        # NexanestDatabaseFillingUp while the suite grows its databases): only the test's count.
        warning = [
            a
            for a in _alerts(alertmanager)
            if a["labels"].get("severity") == "warning" and a["labels"].get("nexanest_test") == test_id
        ]
        assert len(warning) == 1
        assert warning[0]["labels"]["nexanest_test"] == test_id
        assert warning[0]["status"]["state"] == "suppressed"
        assert warning[0]["status"]["inhibitedBy"]
        # And Prometheus knows the test's Alertmanager as one of its own.
        active = api_body("alertmanagers")["data"]["activeAlertmanagers"]
        assert f"http://{alertmanager}/api/v2/alerts" in {a["url"] for a in active}
    finally:
        for path in (rules, targets, announced):
            path.unlink(missing_ok=True)
        _reload_prometheus()
