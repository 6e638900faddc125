"""The Helm chart (deploy/helm/nexanest), rendered and validated offline.

``deploy/helm/check.sh`` lints each value set with ``helm lint --strict``,
renders it with ``helm template`` and validates every object with
``kubeconform -strict`` against the Kubernetes 1.37 schemas and the operators'
CRD schemas (an object without a schema fails). These tests run it once, then
read what it rendered and hold the chart to what issue 16 asks of it: the
consumer never scaled beyond the partitions, probes on /healthz and /readyz,
a PodDisruptionBudget per workload, NetworkPolicies that let each component
reach only its own stores, and no secret value anywhere but in a Secret made
from install-time values. No Kubernetes cluster is involved: none can run here.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "deploy/helm/check.sh"
CHART = REPO / "deploy/helm/nexanest"
SETS = ("small", "production", "production-scram", "inline-secret", "external-sasl")
SERVICES = {"auth": 8001, "portfolio": 8002, "market-data": 8003, "notifications": 8004, "analytics": 8005}

# The stores each component may reach (and so the ports of its egress rules besides DNS).
STORES = {
    "auth": {"postgres", "redis"},
    "portfolio": {"postgres", "timescale", "redis"},
    "market-data": {"timescale", "redis"},
    "notifications": {"postgres", "redis"},
    "analytics": {"postgres", "timescale", "redis"},
    "consumer": {"timescale", "redis", "kafka"},
    "producer": {"kafka"},
    "migrate": {"postgres", "timescale"},
}
SECRET_VALUE = re.compile(r"(postgres(ql)?|redis)://[^/\s\"']*:[^@\s\"']+@|dummy-NEXANEST_")

pytestmark = pytest.mark.timeout(1800)  # the first run go-installs helm (minutes); later ones take seconds


@dataclass(frozen=True)
class Rendered:
    name: str
    text: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, component: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == f"nexanest-{component}"]
        assert len(found) == 1, f"{self.name}: {kind} nexanest-{component}: {len(found)} found"
        return found[0]

    def config(self) -> dict[str, str]:
        (cm,) = self.of_kind("ConfigMap")
        data: dict[str, str] = cm["data"]
        return data

    def workloads(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(component, pod template spec) of every Deployment and Job."""
        for o in self.objects:
            if o["kind"] in ("Deployment", "Job"):
                yield o["metadata"]["labels"]["app.kubernetes.io/component"], o["spec"]["template"]


@pytest.fixture(scope="module")
def check_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("helm")
    done = subprocess.run([str(CHECK), str(out)], capture_output=True, text=True, timeout=1700, check=False)
    if done.returncode != 0:
        pytest.fail(f"deploy/helm/check.sh failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return out, done.stdout


@pytest.fixture(scope="module")
def rendered(check_output: tuple[Path, str]) -> dict[str, Rendered]:
    out, _ = check_output
    sets = {}
    for name in SETS:
        text = (out / f"{name}.yaml").read_text()
        sets[name] = Rendered(name, text, [o for o in yaml.safe_load_all(text) if o])
    return sets


def test_kubeconform_validated_every_object_of_every_set(check_output: tuple[Path, str]) -> None:
    _, stdout = check_output
    for name in SETS:
        summary = [line for line in stdout.splitlines() if line.startswith(f"[{name}] Summary:")]
        assert len(summary) == 1, stdout
        m = re.search(r"(\d+) resources found.*Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)", summary[0])
        assert m, summary[0]
        found, valid, invalid, errors, skipped = map(int, m.groups())
        assert found > 10
        assert (valid, invalid, errors, skipped) == (found, 0, 0, 0), summary[0]


def test_the_consumer_never_scales_beyond_the_partitions(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        partitions = int(r.config()["NEXANEST_KAFKA__PARTITIONS"])
        (scaled,) = r.of_kind("ScaledObject")
        assert scaled["spec"]["scaleTargetRef"]["name"] == "nexanest-consumer"
        assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == r.config()["NEXANEST_KAFKA__CONSUMER_GROUP"]
        assert trigger["metadata"]["topic"] == r.config()["NEXANEST_KAFKA__TICKS_TOPIC"]
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
        assert "replicas" not in r.named("Deployment", "consumer")["spec"]  # KEDA owns the count
        for topic in r.of_kind("KafkaTopic"):
            if topic["spec"]["topicName"] in ("ticks", "ticks.backfill"):
                assert topic["spec"]["partitions"] == partitions
        if r.of_kind("Kafka"):  # the topics the pipeline's ensure_topics looks for, all made by Strimzi
            names = {t["spec"]["topicName"] for t in r.of_kind("KafkaTopic")}
            assert names == {"ticks", "ticks.dlq", "system_events", "ticks.backfill"}
            assert r.config()["NEXANEST_KAFKA__REPLICATION_FACTOR"] == "3"
    assert int(rendered["production"].config()["NEXANEST_KAFKA__PARTITIONS"]) == 24


def test_more_consumers_than_partitions_is_refused_at_render_time(check_output: tuple[Path, str]) -> None:
    helm = [str(_helm_binary()), "template", "nexanest", str(CHART), "--kube-version", "1.37.0"]
    for extra, refused in (
        (["--set", "kafka.partitions=4", "--set", "consumer.autoscaling.maxReplicas=5"], True),
        (["--set", "kafka.partitions=5", "--set", "consumer.autoscaling.maxReplicas=5"], False),
        (["--set", "consumer.autoscaling.enabled=false", "--set", "consumer.replicas=7"], True),
        (["--set", "consumer.autoscaling.enabled=false", "--set", "consumer.replicas=6"], False),
    ):
        done = subprocess.run([*helm, *extra], capture_output=True, text=True, check=False)
        assert (done.returncode != 0) == refused, (extra, done.stderr)
        assert ("exceeds kafka.partitions" in done.stderr) == refused, (extra, done.stderr)


def test_services_have_probes_services_and_the_seed_ports(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        for name, port in SERVICES.items():
            pod = r.named("Deployment", name)["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            assert container["args"] == ["serve", name]
            assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            service = r.named("Service", name)
            assert service["spec"]["ports"][0]["port"] == port
            assert r.config()[f"NEXANEST_SERVICES__{name.upper().replace('-', '_')}_PORT"] == str(port)
        assert r.config()["NEXANEST_SERVICES__HOST"] == "0.0.0.0"  # noqa: S104 - in a pod, on purpose


def test_every_workload_has_a_disruption_budget_selecting_it(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        budgets = r.of_kind("PodDisruptionBudget")
        for deployment in r.of_kind("Deployment"):
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            matching = [b for b in budgets if _selects(b["spec"]["selector"]["matchLabels"], labels)]
            assert len(matching) == 1, f"{r.name}: {deployment['metadata']['name']}"
    production = rendered["production"]
    for name in SERVICES:
        deployment = production.named("Deployment", name)
        budget = production.named("PodDisruptionBudget", name)
        assert deployment["spec"]["replicas"] >= 2
        assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
        affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert production.named("ScaledObject", "consumer")["spec"]["minReplicaCount"] >= 2


def test_network_policies_let_each_component_reach_only_its_stores(rendered: dict[str, Rendered]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    store_ports = {name: store["port"] for name, store in values["stores"].items()}
    for r in rendered.values():
        policies = r.of_kind("NetworkPolicy")
        for component, template in r.workloads():
            labels = template["metadata"]["labels"]
            (policy,) = [p for p in policies if _selects(p["spec"]["podSelector"]["matchLabels"], labels)]
            assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            egress = policy["spec"]["egress"]
            dns, stores = egress[0], egress[1:]
            assert {p["port"] for p in dns["ports"]} == {53}
            extra = values["services"].get(component, {}).get("extraEgress", [])
            store_rules = stores[: len(stores) - len(extra)]
            reached = sorted(p["port"] for rule in store_rules for p in rule["ports"])
            assert reached == sorted(store_ports[s] for s in STORES[component]), f"{r.name}: {component}"
            # A component that does not use Kafka has no way to it (the only 9092 rule is Kafka's).
            if "kafka" not in STORES[component]:
                assert store_ports["kafka"] not in reached
            if r.name.startswith("production") and "kafka" in STORES[component]:
                strimzi = {"strimzi.io/cluster": "nexanest", "strimzi.io/kind": "Kafka"}
                assert {"podSelector": {"matchLabels": strimzi}} in [p for rule in store_rules for p in rule["to"]]
            if component in SERVICES:
                (ingress,) = policy["spec"]["ingress"]
                assert ingress["ports"] == [{"protocol": "TCP", "port": SERVICES[component]}]
            elif component == "migrate":
                assert policy["spec"]["ingress"] == []


def test_each_component_gets_only_its_own_credentials(rendered: dict[str, Rendered]) -> None:
    own = {
        "auth": {"NEXANEST_SERVICES__AUTH_DSN"},
        "market-data": {"NEXANEST_SERVICES__MARKET_DATA_DSN"},
        "consumer": {"NEXANEST_TIMESCALE__DSN"},
        "migrate": {"NEXANEST_TIMESCALE__ADMIN_DSN", "NEXANEST_POSTGRES__AUTH_DSN"},
    }
    for r in rendered.values():
        for component, template in r.workloads():
            from_secret = {
                e["name"]
                for c in template["spec"]["containers"]
                for e in c.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            dsns = {k for k in from_secret if k.endswith("_DSN")}
            if component in own:
                assert own[component] <= dsns
            if component != "migrate":
                assert not any("ADMIN" in k or k.startswith("NEXANEST_POSTGRES__") for k in dsns), component
            if component == "producer":
                assert not dsns


def test_no_secret_value_outside_a_secret(rendered: dict[str, Rendered]) -> None:
    for name in ("small", "production", "production-scram"):
        r = rendered[name]
        assert r.of_kind("Secret") == [], f"{name} names an existing Secret; the chart makes none"
        assert not SECRET_VALUE.search(r.text)
    inline = rendered["inline-secret"]
    (secret,) = inline.of_kind("Secret")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert all(v == f"dummy-{k}" for k, v in secret["stringData"].items())
    assert "NEXANEST_SERVICES__TOKEN_SECRET" in secret["stringData"]
    others = yaml.safe_dump_all([o for o in inline.objects if o["kind"] != "Secret"])
    assert "dummy-NEXANEST_" not in others
    for r in rendered.values():
        for key in r.config():
            assert not re.search(r"(DSN|PASSWORD|SECRET)$", key), key
        for _, template in r.workloads():
            for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
                for env in container.get("env", []):
                    if re.search(r"(DSN|URL|PASSWORD|SECRET)$", env["name"]):
                        # Prometheus' and Alertmanager's addresses are no secrets (and empty: not probed in a cluster).
                        assert "valueFrom" in env or env in (
                            {"name": "NEXANEST_PROMETHEUS_URL", "value": ""},
                            {"name": "NEXANEST_ALERTMANAGER_URL", "value": ""},
                        )
    for path in CHART.rglob("*"):
        if path.is_file():
            assert not SECRET_VALUE.search(path.read_text()), path


def test_migrations_run_as_a_hook_before_install_and_upgrade(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        (job,) = r.of_kind("Job")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        pod = job["spec"]["template"]["spec"]
        assert [c["args"] for c in pod["containers"]] == [["migrate"]]
        # A hook runs before the ConfigMap exists: its settings are inline.
        assert all("envFrom" not in c for c in pod["containers"])
        env = {e["name"] for e in pod["containers"][0]["env"]}
        assert "NEXANEST_KAFKA__PARTITIONS" in env


def test_pods_run_unprivileged(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        for component, template in r.workloads():
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, component
            assert spec["automountServiceAccountToken"] is False
            for c in spec["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert c["resources"]["requests"]["cpu"]
                assert c["resources"]["limits"]["memory"]


def test_scram_gives_each_client_least_privilege(rendered: dict[str, Rendered]) -> None:
    assert rendered["production"].of_kind("KafkaUser") == []
    r = rendered["production-scram"]
    (kafka,) = r.of_kind("Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple"}
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    assert kafka["spec"]["kafka"]["config"]["unclean.leader.election.enable"] is False

    def grants(user: str) -> set[tuple[str, str, str]]:
        acls = r.named("KafkaUser", user)["spec"]["authorization"]["acls"]
        return {(a["resource"]["type"], a["resource"].get("name", ""), op) for a in acls for op in a["operations"]}

    producer, consumer = grants("producer"), grants("consumer")
    assert {(t, n) for t, n, op in producer if op == "Write"} == {
        ("topic", "ticks"),
        ("topic", "ticks.backfill"),
        ("topic", "system_events"),
    }
    assert ("topic", "ticks.dlq", "Write") not in producer
    assert ("topic", "ticks", "Read") not in producer
    assert ("topic", "ticks", "Write") not in consumer
    assert {op for _, _, op in producer} == {"Write", "Describe", "IdempotentWrite"}
    group = "nexanest-ticks-to-timescale"
    assert {(t, n) for t, n, op in consumer if op == "Read"} == {
        ("topic", "ticks"),
        ("group", group),
        ("topic", "ticks.backfill"),
        ("group", f"{group}.backfill"),
    }
    assert {n for t, n, op in consumer if op == "Write"} == {"ticks.dlq", "system_events"}
    (scaled,) = r.of_kind("ScaledObject")
    assert scaled["spec"]["triggers"][0]["authenticationRef"] == {"name": "nexanest-consumer"}


def test_an_external_cluster_takes_each_clients_credentials_from_a_secret(rendered: dict[str, Rendered]) -> None:
    r = rendered["external-sasl"]
    assert r.of_kind("KafkaUser") == []
    assert r.of_kind("Kafka") == []
    for component in ("producer", "consumer"):
        spec = r.named("Deployment", component)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["NEXANEST_KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["NEXANEST_KAFKA__SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        for what in ("username", "password"):
            ref = env[f"NEXANEST_KAFKA__SASL_{what.upper()}"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "nexanest-kafka", "key": f"{component}-{what}"}
        assert env["NEXANEST_KAFKA__SSL_CAFILE"]["value"] == "/etc/nexanest/kafka-ca/ca.crt"
        assert {"name": "kafka-ca", "mountPath": "/etc/nexanest/kafka-ca", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert {
            "name": "kafka-ca",
            "secret": {"secretName": "nexanest-kafka-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        } in spec["volumes"]
    # The services never see the Kafka credentials.
    spec = r.named("Deployment", "auth")["spec"]["template"]["spec"]
    assert not [e for e in spec["containers"][0].get("env", []) if e["name"].startswith("NEXANEST_KAFKA__")]
    (scaled,) = r.of_kind("ScaledObject")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metadata"]["sasl"] == "scram_sha512"
    assert trigger["metadata"]["tls"] == "enable"
    assert trigger["authenticationRef"] == {"name": "nexanest-consumer"}
    (auth,) = r.of_kind("TriggerAuthentication")
    assert {(t["parameter"], t["key"]) for t in auth["spec"]["secretTargetRef"]} == {
        ("username", "consumer-username"),
        ("password", "consumer-password"),
        ("ca", "ca.crt"),
    }


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _helm_binary() -> Path:
    """The helm check.sh installed: its versions from the script, the cache
    directory as deploy/local/lib.sh picks it."""
    versions = dict(re.findall(r"^(HELM_VERSION|KUBECONFORM_VERSION)=(\S+)", CHECK.read_text(), re.MULTILINE))
    done = subprocess.run(
        ["bash", "-c", f'source "{REPO}/deploy/local/lib.sh" && echo "$CACHE_DIR"'],
        capture_output=True,
        text=True,
        check=True,
    )
    tools = f"helm-{versions['HELM_VERSION']}-kubeconform-{versions['KUBECONFORM_VERSION']}"
    return Path(done.stdout.strip(), "helm-tools", tools, "bin", "helm")
