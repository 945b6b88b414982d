"""deploy/helm/causelog: `helm lint` and `helm template` with the real helm binary (built from its Go
module by deploy/helm/install-helm.sh, cached in deploy/helm/.bin), every rendered manifest
validated offline against the Kubernetes JSON schemas that the kubernetes-validate wheel ships, and
the chart's promises checked on the rendered objects: workers scaled by partitions, receivers behind
Services, rules agents, settings in a ConfigMap, secrets only in a Secret, Prometheus scrape
annotations and /health probes.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "causelog"
CI_VALUES = CHART / "ci" / "test-values.yaml"
INSTALL = ROOT / "deploy" / "helm" / "install-helm.sh"
K8S_VERSION = "1.33.0"


def _helm_version() -> str:
    m = re.search(r"^HELM_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert m, "Makefile defines HELM_VERSION"
    return m.group(1)


@pytest.fixture(scope="module")
def helm() -> str:
    """The helm binary, built once if Go is there; skipped locally without Go, failed in CI."""
    binary = ROOT / "deploy" / "helm" / ".bin" / f"helm-{_helm_version()}"
    if binary.exists():
        return str(binary)
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        if os.environ.get("CI") == "true":
            pytest.fail("Go is missing in CI: .ci/run must install helm (deploy/helm/install-helm.sh)")
        pytest.skip("Go is not installed: helm is built from its Go module (make helm)")
    run = subprocess.run(["bash", str(INSTALL), _helm_version()], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


def template(helm: str, *sets: str, values: Path | None = CI_VALUES) -> subprocess.CompletedProcess[str]:
    cmd = [helm, "template", "causelog", str(CHART)]
    if values:
        cmd += ["-f", str(values)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render(helm: str, *sets: str) -> list[dict[str, Any]]:
    run = template(helm, *sets)
    assert run.returncode == 0, run.stderr
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


# -- helm lint / template, Kubernetes schemas ---------------------------------------------------


def test_helm_lint_passes(helm: str) -> None:
    run = subprocess.run([helm, "lint", "--strict", str(CHART), "-f", str(CI_VALUES)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 chart(s) failed" in run.stdout


def test_rendered_manifests_validate_against_kubernetes_schemas(helm: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                              reason="kubernetes-validate (dev extra) is not installed")
    docs = render(helm)
    assert {d["kind"] for d in docs} == {"ConfigMap", "Secret", "Service", "Deployment", "PodDisruptionBudget"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_catches_a_wrong_field(helm: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                              reason="kubernetes-validate (dev extra) is not installed")
    worker = by_kind(render(helm), "Deployment")["causelog-worker"]
    container(worker)["livenessProbe"]["httpGet"]["paht"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("sets", "message"), [
    ((), "kafka.bootstrap is required"),
])
def test_defaults_alone_refuse_to_render_without_the_engines(helm: str, sets: tuple[str, ...], message: str) -> None:
    run = template(helm, *sets, values=None)
    assert run.returncode != 0 and message in run.stderr


@pytest.mark.parametrize(("sets", "message"), [
    (("secretEnv.CLICKHOUSE_URL=",), "secretEnv.CLICKHOUSE_URL (or secrets.existingSecret holding CLICKHOUSE_URL) is required"),
    (("worker.replicas=13",), "worker.replicas=13 exceeds config.CAUSELOG_PARTITIONS=12"),
    (("config.CAUSELOG_PARTITIONS=0",), "config.CAUSELOG_PARTITIONS must be a positive number"),
])
def test_values_that_cannot_work_fail_with_the_reason(helm: str, sets: tuple[str, ...], message: str) -> None:
    run = template(helm, *sets)
    assert run.returncode != 0 and message in run.stderr, run.stderr


# -- what the chart deploys ---------------------------------------------------------------------


def test_workers_scale_with_partitions(helm: str) -> None:
    assert by_kind(render(helm), "Deployment")["causelog-worker"]["spec"]["replicas"] == 12
    assert by_kind(render(helm, "config.CAUSELOG_PARTITIONS=24"), "Deployment")["causelog-worker"]["spec"][
        "replicas"] == 24
    assert by_kind(render(helm, "worker.replicas=3"), "Deployment")["causelog-worker"]["spec"]["replicas"] == 3


def test_every_process_gets_settings_and_secrets_without_secrets_in_the_configmap(helm: str) -> None:
    docs = render(helm)
    config = by_kind(docs, "ConfigMap")["causelog"]["data"]
    secret = by_kind(docs, "Secret")["causelog-secrets"]["data"]
    assert config["KAFKA_BOOTSTRAP"].startswith("kafka-0.kafka:9092")
    assert config["CAUSELOG_PARTITIONS"] == "12"
    assert base64.b64decode(secret["CLICKHOUSE_URL"]).decode() == "http://causelog:test-password@clickhouse:8123"
    assert {"CAUSELOG_API_TOKENS", "CAUSELOG_HASH_KEY", "CAUSELOG_SIGNING_KEY", "GITHUB_WEBHOOK_SECRET"} <= set(secret)
    assert not any("password" in v or "test-" in v for v in config.values()), "a secret leaked into the ConfigMap"
    for name, dep in by_kind(docs, "Deployment").items():
        refs = container(dep)["envFrom"]
        assert {"configMapRef": {"name": "causelog"}} in refs and {"secretRef": {"name": "causelog-secrets"}} in refs, name


def test_an_existing_secret_replaces_the_chart_secret(helm: str) -> None:
    docs = render(helm, "secrets.existingSecret=prod-causelog", "secretEnv.CLICKHOUSE_URL=")
    assert by_kind(docs, "Secret") == {}
    for dep in by_kind(docs, "Deployment").values():
        assert {"secretRef": {"name": "prod-causelog"}} in container(dep)["envFrom"]


def test_empty_secret_values_are_left_out(helm: str) -> None:
    secret = by_kind(render(helm, "secretEnv.CAUSELOG_HASH_KEY="), "Secret")["causelog-secrets"]["data"]
    assert "CAUSELOG_HASH_KEY" not in secret and "CLICKHOUSE_URL" in secret


def test_http_processes_have_scrape_annotations_probes_and_services(helm: str) -> None:
    docs = render(helm)
    deployments, services = by_kind(docs, "Deployment"), by_kind(docs, "Service")
    expected = {"causelog-worker": (6066, "causelog-api"), "causelog-github-webhook": (8089, "causelog-github-webhook"),
                "causelog-k8s-audit": (8090, "causelog-k8s-audit")}
    for name, (port, service) in expected.items():
        pod = deployments[name]["spec"]["template"]
        ann = pod["metadata"]["annotations"]
        assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"], ann["prometheus.io/path"]) == (
            "true", str(port), "/metrics"), name
        c = container(deployments[name])
        assert c["ports"] == [{"name": "http", "containerPort": port}], name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, f"{name} {probe}"
        assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 300, name
        svc = services[service]["spec"]
        assert svc["ports"][0]["port"] == port and svc["ports"][0]["targetPort"] == "http"
        assert svc["selector"] == deployments[name]["spec"]["selector"]["matchLabels"]
        assert pod["metadata"]["labels"].items() >= svc["selector"].items()


def test_processes_listen_where_their_probes_look(helm: str) -> None:
    deployments = by_kind(render(helm), "Deployment")
    worker = container(deployments["causelog-worker"])
    assert worker["args"] == ["worker"] and {"name": "CAUSELOG_API", "value": "0.0.0.0:6066"} in worker["env"]
    hook = container(deployments["causelog-github-webhook"])["args"]
    assert hook[:2] == ["ingest", "github-webhook"] and hook[hook.index("--listen") + 1] == "0.0.0.0:8089"
    assert hook[hook.index("--secret-env") + 1] == "GITHUB_WEBHOOK_SECRET"
    audit = container(deployments["causelog-k8s-audit"])["args"]
    assert audit[audit.index("--listen") + 1] == "0.0.0.0:8090"


def test_rules_agents_run_and_can_be_turned_off(helm: str) -> None:
    rules = by_kind(render(helm), "Deployment")["causelog-rules"]
    assert container(rules)["args"] == ["rules", "run"] and rules["spec"]["replicas"] == 2
    assert "causelog-rules" not in by_kind(render(helm, "rules.enabled=false"), "Deployment")
    assert "causelog-k8s-audit" not in by_kind(render(helm, "receivers.k8s-audit.enabled=false"), "Deployment")


def test_pods_run_unprivileged_and_read_only(helm: str) -> None:
    for name, dep in by_kind(render(helm), "Deployment").items():
        spec = dep["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        sc = container(dep)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
        mounts = {m["mountPath"] for m in container(dep)["volumeMounts"]}
        assert {"/var/lib/causelog", "/tmp", "/etc/causelog"} <= mounts, name


def test_topology_and_identities_are_mounted_where_settings_point(helm: str) -> None:
    docs = render(helm)
    config = by_kind(docs, "ConfigMap")
    assert config["causelog"]["data"]["CAUSELOG_TOPOLOGY"] == "/etc/causelog/topology.yaml"
    files = config["causelog-files"]["data"]
    assert yaml.safe_load(files["topology.yaml"]) == {"depends_on": {"api": ["orders-db"]}}
    assert "alice" in yaml.safe_load(files["identities.yaml"])["people"]


def test_config_change_rolls_the_pods(helm: str) -> None:
    def checksum(*sets: str) -> str:
        pod = by_kind(render(helm, *sets), "Deployment")["causelog-worker"]["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum("config.CAUSELOG_BATCH_SIZE=5000")


def test_chart_settings_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `((?:CAUSELOG|KAFKA|CLICKHOUSE)_[A-Z_]+)` \|", readme, flags=re.M))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["config"]) <= documented
