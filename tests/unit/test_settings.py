"""Settings from the environment (pipeline/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings, load


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load({})

    assert s == Settings(
        home=(tmp_path / ".causelog").resolve(),
        kafka_bootstrap="127.0.0.1:9092",
        kafka_external=False,
        clickhouse_url=None,
        database="causelog",
        topic_prefix="causelog",
        partitions=4,
        group="causelog-worker",
        api_host="127.0.0.1",
        api_port=6066,
        batch_size=20000,
        batch_within=0.5,
        max_event_bytes=1024 * 1024,
        scope="default",
    )
    assert s.embedded is True
    assert s.chdb_path == s.home / "chdb"
    assert s.run_dir == s.home / "run"
    assert s.api_url == "http://127.0.0.1:6066"


def test_every_variable_is_parsed(tmp_path: Path) -> None:
    env = {
        "CAUSELOG_HOME": str(tmp_path / "state"),
        "KAFKA_BOOTSTRAP": " k1:9093,k2:9093 ",
        "CAUSELOG_KAFKA_PORT": "19092",
        "CLICKHOUSE_URL": " https://writer:s3cret@ch.example:8443/audit ",
        "CAUSELOG_DATABASE": "audit_2026",
        "CAUSELOG_TOPIC_PREFIX": "prod-eu.causelog_v2",
        "CAUSELOG_PARTITIONS": "12",
        "CAUSELOG_GROUP": "workers-eu",
        "CAUSELOG_API": "0.0.0.0:7077",
        "CAUSELOG_BATCH_SIZE": "5000",
        "CAUSELOG_BATCH_WITHIN": "0.05",
        "CAUSELOG_MAX_EVENT_BYTES": "2048",
        "CAUSELOG_SCOPE": "globex",
    }
    s = load(env)

    assert s.home == (tmp_path / "state").resolve()
    assert s.kafka_bootstrap == "k1:9093,k2:9093"
    assert s.kafka_external is True
    assert s.clickhouse_url == "https://writer:s3cret@ch.example:8443/audit"
    assert s.embedded is False
    assert s.database == "audit_2026"
    assert s.topic_prefix == "prod-eu.causelog_v2"
    assert s.partitions == 12
    assert s.group == "workers-eu"
    assert (s.api_host, s.api_port) == ("0.0.0.0", 7077)
    assert s.api_url == "http://0.0.0.0:7077"
    assert s.batch_size == 5000
    assert s.batch_within == 0.05
    assert s.max_event_bytes == 2048
    assert s.scope == "globex"


def test_home_expands_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load({"CAUSELOG_HOME": "~/cl"}).home == (tmp_path / "cl").resolve()


def test_relative_home_is_resolved_against_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    s = load({"CAUSELOG_HOME": "data/../state"})
    assert s.home == (tmp_path / "state").resolve()
    assert s.home.is_absolute()


def test_empty_values_mean_default(tmp_path: Path) -> None:
    names = ["KAFKA_BOOTSTRAP", "CAUSELOG_KAFKA_PORT", "CLICKHOUSE_URL", "CAUSELOG_DATABASE", "CAUSELOG_TOPIC_PREFIX",
             "CAUSELOG_PARTITIONS", "CAUSELOG_GROUP", "CAUSELOG_API", "CAUSELOG_BATCH_SIZE", "CAUSELOG_BATCH_WITHIN",
             "CAUSELOG_MAX_EVENT_BYTES", "CAUSELOG_SCOPE"]  # fmt: skip
    env = dict.fromkeys(names, "")
    env["CAUSELOG_HOME"] = str(tmp_path)
    assert load(env) == load({"CAUSELOG_HOME": str(tmp_path)})


def test_load_without_argument_reads_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAUSELOG_HOME", str(tmp_path))
    monkeypatch.setenv("CAUSELOG_PARTITIONS", "7")
    monkeypatch.setenv("CAUSELOG_SCOPE", "from-env")
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    s = load()
    assert (s.home, s.partitions, s.scope) == (tmp_path.resolve(), 7, "from-env")


def test_load_copies_the_mapping(tmp_path: Path) -> None:
    env = {"CAUSELOG_HOME": str(tmp_path)}
    load(env)
    assert env == {"CAUSELOG_HOME": str(tmp_path)}


@pytest.mark.parametrize(
    ("prefix", "topics"),
    [
        (None, ("causelog.changes", "causelog.dlq", "causelog.chains", "causelog.alerts")),
        ("acme-prod", ("acme-prod.changes", "acme-prod.dlq", "acme-prod.chains", "acme-prod.alerts")),
        ("a.b_c", ("a.b_c.changes", "a.b_c.dlq", "a.b_c.chains", "a.b_c.alerts")),
    ],
    ids=["default", "dashed", "dotted"],
)
def test_topic_names_follow_the_prefix(tmp_path: Path, prefix: str | None, topics: tuple[str, ...]) -> None:
    env = {"CAUSELOG_HOME": str(tmp_path)}
    if prefix is not None:
        env["CAUSELOG_TOPIC_PREFIX"] = prefix
    s = load(env)
    assert (s.topic_changes, s.topic_dlq, s.topic_chains, s.topic_alerts) == topics


@pytest.mark.parametrize(
    ("env", "bootstrap", "external"),
    [
        ({}, "127.0.0.1:9092", False),
        ({"CAUSELOG_KAFKA_PORT": "29092"}, "127.0.0.1:29092", False),
        ({"KAFKA_BOOTSTRAP": "broker:9092"}, "broker:9092", True),
        ({"KAFKA_BOOTSTRAP": "broker:9092", "CAUSELOG_KAFKA_PORT": "29092"}, "broker:9092", True),
        ({"KAFKA_BOOTSTRAP": "   "}, "127.0.0.1:9092", False),
    ],
    ids=["local-default", "local-port", "external", "external-ignores-port", "blank-is-local"],
)
def test_kafka_bootstrap_switches_to_external(
    tmp_path: Path, env: dict[str, str], bootstrap: str, external: bool
) -> None:
    s = load({"CAUSELOG_HOME": str(tmp_path), **env})
    assert (s.kafka_bootstrap, s.kafka_external) == (bootstrap, external)


@pytest.mark.parametrize(
    "url",
    ["http://localhost:8123", "https://u:p@ch:8443/db"],
    ids=["http", "https"],
)
def test_clickhouse_url_selects_the_server(tmp_path: Path, url: str) -> None:
    s = load({"CAUSELOG_HOME": str(tmp_path), "CLICKHOUSE_URL": url})
    assert s.clickhouse_url == url
    assert s.embedded is False


BAD_VALUES = [
    ("CAUSELOG_PARTITIONS", "four", "is not an integer"),
    ("CAUSELOG_PARTITIONS", "0", "must be >= 1"),
    ("CAUSELOG_PARTITIONS", "-3", "must be >= 1"),
    ("CAUSELOG_PARTITIONS", "2.5", "is not an integer"),
    ("CAUSELOG_KAFKA_PORT", "90x2", "is not an integer"),
    ("CAUSELOG_KAFKA_PORT", "0", "must be >= 1"),
    ("CAUSELOG_KAFKA_PORT", "70000", "must be <= 65535"),
    ("CAUSELOG_BATCH_SIZE", "1e4", "is not an integer"),
    ("CAUSELOG_BATCH_SIZE", "0", "must be >= 1"),
    ("CAUSELOG_MAX_EVENT_BYTES", "1MB", "is not an integer"),
    ("CAUSELOG_MAX_EVENT_BYTES", "0", "must be >= 1"),
    ("CAUSELOG_BATCH_WITHIN", "soon", "is not a number"),
    ("CAUSELOG_BATCH_WITHIN", "0", "> 0"),
    ("CAUSELOG_BATCH_WITHIN", "-0.5", "> 0"),
    ("CAUSELOG_BATCH_WITHIN", "nan", "finite"),
    ("CAUSELOG_BATCH_WITHIN", "inf", "finite"),
    ("CAUSELOG_API", "localhost", "HOST:PORT"),
    ("CAUSELOG_API", ":6066", "HOST:PORT"),
    ("CAUSELOG_API", "localhost:", "HOST:PORT"),
    ("CAUSELOG_API", "localhost:http", "HOST:PORT"),
    ("CAUSELOG_API", "localhost:-1", "HOST:PORT"),
    ("CAUSELOG_API", "localhost:0", "HOST:PORT"),
    ("CAUSELOG_API", "localhost:65536", "HOST:PORT"),
    ("CAUSELOG_API", "localhost:\u0661\u0662", "HOST:PORT"),
    ("CAUSELOG_TOPIC_PREFIX", "bad prefix", "may hold only"),
    ("CAUSELOG_TOPIC_PREFIX", "a/b", "may hold only"),
    ("CAUSELOG_TOPIC_PREFIX", "caf\u00e9", "may hold only"),
    ("CAUSELOG_DATABASE", "my-db", "may hold only"),
    ("CAUSELOG_DATABASE", "db;DROP", "may hold only"),
    ("CAUSELOG_DATABASE", "d\u00e9j\u00e0", "may hold only"),
    ("CAUSELOG_DATABASE", "2026", "may hold only"),
    ("CAUSELOG_DATABASE", "a.b", "may hold only"),
    ("CLICKHOUSE_URL", "localhost:8123", "must start with http:// or https://"),
    ("CLICKHOUSE_URL", "clickhouse://ch:9000", "must start with http:// or https://"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    BAD_VALUES,
    ids=[f"{name.removeprefix('CAUSELOG_').lower()}={ascii(value)[1:-1]}" for name, value, _ in BAD_VALUES],
)
def test_bad_values_name_the_variable_and_value(tmp_path: Path, name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({"CAUSELOG_HOME": str(tmp_path), name: value})
    message = str(info.value)
    assert message.startswith(f"{name}={value!r} ")
    assert fragment in message


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("CAUSELOG_DATABASE", "_x1", "database", "_x1"),
        ("CAUSELOG_DATABASE", "1abc", "database", "1abc"),
        ("CAUSELOG_API", "[::1]:8080", "api_host", "[::1]"),
        ("CAUSELOG_API", "localhost:65535", "api_port", 65535),
        ("CAUSELOG_PARTITIONS", " 8 ", "partitions", 8),
        ("CAUSELOG_BATCH_WITHIN", "2", "batch_within", 2.0),
    ],
    ids=["db-underscore", "db-leading-digit", "api-ipv6", "api-max-port", "int-spaces", "float-int"],
)
def test_unusual_but_valid_values(
    tmp_path: Path, name: str, value: str, field: str, expected: object
) -> None:
    assert getattr(load({"CAUSELOG_HOME": str(tmp_path), name: value}), field) == expected


def test_integrity_settings_defaults_and_overrides(tmp_path: Path) -> None:
    s = load({"CAUSELOG_HOME": str(tmp_path)})
    assert (s.integrity, s.sign_seconds, s.checkpoint_dir, s.deployment) == (True, 10.0, None, None)
    assert s.signing_key_path == tmp_path.resolve() / "signing.key"
    assert s.topic_checkpoints == "causelog.checkpoints"
    s = load({"CAUSELOG_HOME": str(tmp_path), "CAUSELOG_INTEGRITY": "off", "CAUSELOG_SIGN_SECONDS": "0.5",
              "CAUSELOG_SIGNING_KEY_FILE": str(tmp_path / "k"), "CAUSELOG_CHECKPOINT_DIR": str(tmp_path / "cp"),
              "CAUSELOG_DEPLOYMENT": "prod/eu-1"})
    assert (s.integrity, s.sign_seconds, s.signing_key_path, s.checkpoint_dir, s.deployment) == (
        False, 0.5, (tmp_path / "k").resolve(), (tmp_path / "cp").resolve(), "prod/eu-1")


@pytest.mark.parametrize(("name", "value"), [
    ("CAUSELOG_INTEGRITY", "maybe"), ("CAUSELOG_SIGN_SECONDS", "0"), ("CAUSELOG_DEPLOYMENT", "a b+c"),
])
def test_bad_integrity_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load({name: value})
