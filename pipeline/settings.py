"""All settings, read from the environment in one place.

| variable | default | meaning |
|---|---|---|
| ``CAUSELOG_HOME`` | ``./.causelog`` | state directory: chDB store, broker data, pid files, logs, source cursors |
| ``KAFKA_BOOTSTRAP`` | unset | bootstrap servers of an existing Kafka cluster; when set nothing is started locally |
| ``CAUSELOG_KAFKA_PORT`` | ``9092`` | port of the local single-node broker (when ``KAFKA_BOOTSTRAP`` is unset) |
| ``CLICKHOUSE_URL`` | unset | ``http(s)://user:pass@host:port/database`` of a ClickHouse server; unset = embedded chDB |
| ``CAUSELOG_DATABASE`` | ``causelog`` | ClickHouse database holding the tables (embedded and server) |
| ``CAUSELOG_TOPIC_PREFIX`` | ``causelog`` | topics are ``<prefix>.changes``, ``.dlq``, ``.chains``, ``.alerts``, ``.cursors``, ``.correlation.<group>`` |
| ``CAUSELOG_PARTITIONS`` | ``4`` | partitions of ``<prefix>.changes`` when causelog creates it |
| ``CAUSELOG_GROUP`` | ``causelog-worker`` | consumer group (and Faust app id) of the workers |
| ``CAUSELOG_API`` | ``127.0.0.1:6066`` | address the worker's query API listens on and the CLI talks to |
| ``CAUSELOG_BATCH_SIZE`` | ``20000`` | most events the worker writes to ClickHouse in one insert |
| ``CAUSELOG_BATCH_WITHIN`` | ``0.5`` | seconds the worker waits to fill a batch before writing what it has |
| ``CAUSELOG_MAX_EVENT_BYTES`` | ``1048576`` | larger records are rejected to the DLQ as ``oversized`` |
| ``CAUSELOG_SCOPE`` | ``default`` | scope given to events that carry none (``causelog produce``) |
| ``CAUSELOG_TOPOLOGY`` | ``$CAUSELOG_HOME/topology.yaml`` | declared dependencies used by ``why`` (see pipeline/correlate/topology.py) |
| ``CAUSELOG_IDENTITIES`` | ``$CAUSELOG_HOME/identities.yaml`` | people and the principals they use across systems (see pipeline/identity) |
| ``CAUSELOG_CHECKPOINT_SECONDS`` | ``5`` | how often the worker commits its correlation changelog (``<prefix>.correlation.<group>``) and its offsets, in one Kafka transaction; a restart re-reads at most this much |
| ``CAUSELOG_INGEST`` | ``batch`` | how the worker consumes: ``batch`` (confluent-kafka batches) or ``agent`` (a Faust agent, slower) |
| ``CAUSELOG_QUERY_TIMEOUT`` | ``30`` | seconds a user query (``sql``, API reads) may run before ClickHouse stops it |
| ``CAUSELOG_QUERY_MAX_ROWS`` | ``100000`` | most rows a user query returns, and the largest ``limit`` a client may ask for |
| ``CAUSELOG_QUERY_MAX_ROWS_READ`` | ``1000000000`` | most rows a user query may read; more is refused |
| ``CAUSELOG_QUERY_MAX_MEMORY`` | ``2147483648`` | bytes of memory one user query may use |
| ``CAUSELOG_TOKENS_FILE`` | ``$CAUSELOG_HOME/tokens.json`` | hashes, names and roles of the API tokens (see pipeline/tokens.py) |
| ``CAUSELOG_TOKEN`` | unset | bearer token the CLI sends to the API; unset = ``$CAUSELOG_HOME/admin.token`` |
| ``CAUSELOG_AUDIT_QUERIES`` | ``1`` | record every API read of events as a ``causelog.query`` event on ``<prefix>.changes`` |
| ``CAUSELOG_HASH_KEY_FILE`` | ``$CAUSELOG_HOME/hash.key`` | HMAC key of hashed values (redacted secrets, statements); share one file across hosts |
| ``CAUSELOG_INTEGRITY`` | ``on`` | ``off`` stores events without log index and leaf hash (benchmarks only) |
| ``CAUSELOG_SIGN_SECONDS`` | ``10`` | most often a grown log gets a signed checkpoint |
| ``CAUSELOG_SIGNING_KEY_FILE`` | ``$CAUSELOG_HOME/signing.key`` | the checkpoint signing key (created on first start) |
| ``CAUSELOG_CHECKPOINT_DIR`` | unset | also write one file per signed checkpoint here |
| ``CAUSELOG_DEPLOYMENT`` | Kafka cluster id ``/`` prefix ``/`` group | deployment id in the checkpoints' origin |
| ``CAUSELOG_SOURCE_SIGNING_KEY`` | unset | key (Go note format) with which sources sign each envelope |
| ``CAUSELOG_SOURCE_KEYS`` | unset | worker: ``<source prefix> <verifier key>`` lines; those sources must sign |
| ``CAUSELOG_RETENTION`` | ``$CAUSELOG_HOME/retention.yaml`` | retention per event type used by ``causelog prune`` |
| ``CAUSELOG_STALL_SECONDS`` | ``120`` | ``status`` flags a partition that has lag and whose committed offset has not advanced for this long |
| ``CAUSELOG_FAULT_STORE_FAIL_UNTIL`` | unset | **test only**: Unix time until which every store write of the worker fails (fault tests) |
| ``CAUSELOG_FAULT_KILL_IN_CHECKPOINT`` | unset | **test only**: the worker SIGKILLs itself inside its N-th checkpoint transaction (fault tests) |
| ``CAUSELOG_CLICKHOUSE_CLUSTER`` | unset | server mode: cluster (``remote_servers`` name) on which the migrations create replicated ``<table>_local`` tables with Distributed tables in front (README, "ClickHouse server and cluster mode") |
| ``CAUSELOG_CLICKHOUSE_ZK_PATH`` | ``/clickhouse/tables/{shard}`` | cluster mode: Keeper path prefix of the replicated tables; each table's path is ``<prefix>/<database>/<table>`` |
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError


def _int(env: dict[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={raw!r} must be <= {maximum}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a finite number > 0")
    return value


def _hostport(name: str, raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={raw!r} must look like HOST:PORT (port 1-65535)")
    return host, int(port)


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; build it with :func:`load`."""

    home: Path
    kafka_bootstrap: str
    kafka_external: bool
    clickhouse_url: str | None
    database: str
    topic_prefix: str
    partitions: int
    group: str
    api_host: str
    api_port: int
    batch_size: int
    batch_within: float
    max_event_bytes: int
    scope: str
    ingest: str = "batch"
    checkpoint_seconds: float = 5.0
    topology_file: Path | None = None
    identities_file: Path | None = None
    query_timeout: float = 30.0
    query_max_rows: int = 100_000
    query_max_rows_read: int = 1_000_000_000
    query_max_memory: int = 2 * 1024**3
    tokens_file: Path | None = None
    token: str | None = None
    audit_queries: bool = True
    hash_key_file: Path | None = None

    @property
    def tokens_path(self) -> Path:
        """The API token store (hashes only), shared by the CLI and the worker."""
        return self.tokens_file or self.home / "tokens.json"

    @property
    def admin_token_path(self) -> Path:
        """Where ``causelog up``/``worker`` leave the first admin token for the local CLI (mode 0600)."""
        return self.home / "admin.token"
    integrity: bool = True
    sign_seconds: float = 10.0
    signing_key_file: Path | None = None
    checkpoint_dir: Path | None = None
    deployment: str | None = None
    source_signing_key: Path | None = None
    source_keys_file: Path | None = None
    retention_file: Path | None = None

    @property
    def retention_path(self) -> Path:
        """The retention policy (``retention.yaml``) of ``causelog prune``."""
        return self.retention_file or self.home / "retention.yaml"

    @property
    def signing_key_path(self) -> Path:
        """The Ed25519 key that signs checkpoints (Go note private-key format)."""
        return self.signing_key_file or self.home / "signing.key"

    @property
    def topic_checkpoints(self) -> str:
        """Compacted topic of signed checkpoints (key: ``<origin>/<size>``)."""
        return f"{self.topic_prefix}.checkpoints"
    rules: str = ""
    notify_file: Path | None = None

    @property
    def notify_path(self) -> Path:
        """Where ``causelog rules run`` reads its notification receivers (``notify.yaml``)."""
        return self.notify_file or self.home / "notify.yaml"
    stall_seconds: float = 120.0
    fault_store_fail_until: float = 0.0
    fault_kill_in_checkpoint: int = 0
    clickhouse_cluster: str = ""
    clickhouse_zk_path: str = "/clickhouse/tables/{shard}"

    @property
    def topology_path(self) -> Path:
        """Where ``why`` reads the declared dependencies."""
        return self.topology_file or self.home / "topology.yaml"

    @property
    def identities_path(self) -> Path:
        """Where the identity map reads its configured people (``identities.yaml``)."""
        return self.identities_file or self.home / "identities.yaml"

    @property
    def hash_key_path(self) -> Path:
        """The deployment's HMAC key for hashed values (see pipeline/hashkey.py)."""
        return self.hash_key_file or self.home / "hash.key"

    @property
    def topic_changes(self) -> str:
        """Topic the sources produce to and the worker consumes."""
        return f"{self.topic_prefix}.changes"

    @property
    def topic_dlq(self) -> str:
        """Dead-letter topic: rejected records with a reason header."""
        return f"{self.topic_prefix}.dlq"

    @property
    def topic_chains(self) -> str:
        """Enriched events with chain id (correlation output)."""
        return f"{self.topic_prefix}.chains"

    @property
    def topic_cursors(self) -> str:
        """Compacted topic of source cursors, written in the same transaction as the events."""
        return f"{self.topic_prefix}.cursors"

    @property
    def topic_correlation(self) -> str:
        """Compacted changelog of the worker group's correlation state, one partition per partition
        of ``changes`` (per group, like a Faust table changelog: another group has its own state)."""
        return f"{self.topic_prefix}.correlation.{self.group}"

    @property
    def topic_alerts(self) -> str:
        """Alerts fired by rules."""
        return f"{self.topic_prefix}.alerts"

    @property
    def embedded(self) -> bool:
        """True when the store is the embedded chDB (owned by the worker process)."""
        return self.clickhouse_url is None

    @property
    def chdb_path(self) -> Path:
        """Directory of the embedded chDB store."""
        return self.home / "chdb"

    @property
    def run_dir(self) -> Path:
        """Pid files and process logs of the local stack."""
        return self.home / "run"

    @property
    def api_url(self) -> str:
        """Base URL of the worker's query API."""
        return f"http://{self.api_host}:{self.api_port}"


def load(environ: dict[str, str] | None = None) -> Settings:
    """Read every ``CAUSELOG_*`` (and ``KAFKA_BOOTSTRAP``, ``CLICKHOUSE_URL``) variable."""
    env = dict(os.environ if environ is None else environ)
    home = Path(env.get("CAUSELOG_HOME") or Path.cwd() / ".causelog").expanduser().resolve()
    external = env.get("KAFKA_BOOTSTRAP", "").strip()
    port = _int(env, "CAUSELOG_KAFKA_PORT", 9092, maximum=65535)
    api_host, api_port = _hostport("CAUSELOG_API", env.get("CAUSELOG_API") or "127.0.0.1:6066")
    prefix = env.get("CAUSELOG_TOPIC_PREFIX") or "causelog"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):  # Kafka topic names are ASCII only
        raise ConfigError(f"CAUSELOG_TOPIC_PREFIX={prefix!r} may hold only letters, digits, '.', '_' and '-'")
    group = env.get("CAUSELOG_GROUP") or "causelog-worker"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", group):  # it names the group's correlation topic
        raise ConfigError(f"CAUSELOG_GROUP={group!r} may hold only letters, digits, '.', '_' and '-'")
    database = env.get("CAUSELOG_DATABASE") or "causelog"
    # Used unquoted in SQL: ClickHouse identifiers are ASCII and not all digits.
    if not re.fullmatch(r"[A-Za-z0-9_]+", database) or database.isdigit():
        raise ConfigError(f"CAUSELOG_DATABASE={database!r} may hold only ASCII letters, digits and '_'")
    url = env.get("CLICKHOUSE_URL", "").strip() or None
    if url is not None and not url.startswith(("http://", "https://")):
        # Echo the value without its credentials, if it carries any.
        shown = re.sub(r"^([^/@]*//)?[^/@]*@", r"\1***@", url)
        raise ConfigError(f"CLICKHOUSE_URL={shown!r} must start with http:// or https://")
    cluster, zk_path = _cluster(env, url)
    return Settings(
        home=home,
        kafka_bootstrap=external or f"127.0.0.1:{port}",
        kafka_external=bool(external),
        clickhouse_url=url,
        database=database,
        topic_prefix=prefix,
        partitions=_int(env, "CAUSELOG_PARTITIONS", 4),
        group=group,
        api_host=api_host,
        api_port=api_port,
        batch_size=_int(env, "CAUSELOG_BATCH_SIZE", 20000),
        batch_within=_float(env, "CAUSELOG_BATCH_WITHIN", 0.5),
        max_event_bytes=_int(env, "CAUSELOG_MAX_EVENT_BYTES", 1024 * 1024),
        scope=env.get("CAUSELOG_SCOPE") or "default",
        ingest=_choice(env, "CAUSELOG_INGEST", ("batch", "agent")),
        checkpoint_seconds=_float(env, "CAUSELOG_CHECKPOINT_SECONDS", 5.0),
        topology_file=Path(env["CAUSELOG_TOPOLOGY"]).expanduser().resolve() if env.get("CAUSELOG_TOPOLOGY") else None,
        identities_file=(
            Path(env["CAUSELOG_IDENTITIES"]).expanduser().resolve() if env.get("CAUSELOG_IDENTITIES") else None
        ),
        query_timeout=_float(env, "CAUSELOG_QUERY_TIMEOUT", 30.0),
        query_max_rows=_int(env, "CAUSELOG_QUERY_MAX_ROWS", 100_000),
        query_max_rows_read=_int(env, "CAUSELOG_QUERY_MAX_ROWS_READ", 1_000_000_000),
        query_max_memory=_int(env, "CAUSELOG_QUERY_MAX_MEMORY", 2 * 1024**3, minimum=1024 * 1024),
        tokens_file=(
            Path(env["CAUSELOG_TOKENS_FILE"]).expanduser().resolve() if env.get("CAUSELOG_TOKENS_FILE") else None
        ),
        token=(env.get("CAUSELOG_TOKEN") or "").strip() or None,
        audit_queries=_choice(env, "CAUSELOG_AUDIT_QUERIES", ("1", "0")) == "1",
        hash_key_file=(
            Path(env["CAUSELOG_HASH_KEY_FILE"]).expanduser().resolve() if env.get("CAUSELOG_HASH_KEY_FILE") else None
        ),
        integrity=_choice(env, "CAUSELOG_INTEGRITY", ("on", "off")) == "on",
        sign_seconds=_float(env, "CAUSELOG_SIGN_SECONDS", 10.0),
        signing_key_file=_path(env, "CAUSELOG_SIGNING_KEY_FILE"),
        checkpoint_dir=_path(env, "CAUSELOG_CHECKPOINT_DIR"),
        deployment=_deployment(env),
        source_signing_key=_path(env, "CAUSELOG_SOURCE_SIGNING_KEY"),
        source_keys_file=_path(env, "CAUSELOG_SOURCE_KEYS"),
        retention_file=_path(env, "CAUSELOG_RETENTION"),
        rules=env.get("CAUSELOG_RULES", ""),
        notify_file=Path(env["CAUSELOG_NOTIFY"]).expanduser().resolve() if env.get("CAUSELOG_NOTIFY") else None,
        stall_seconds=_float(env, "CAUSELOG_STALL_SECONDS", 120.0),
        fault_store_fail_until=_float(env, "CAUSELOG_FAULT_STORE_FAIL_UNTIL", 0.0)
        if env.get("CAUSELOG_FAULT_STORE_FAIL_UNTIL") else 0.0,
        fault_kill_in_checkpoint=_int(env, "CAUSELOG_FAULT_KILL_IN_CHECKPOINT", 0, minimum=0),
        clickhouse_cluster=cluster,
        clickhouse_zk_path=zk_path,
    )


def _cluster(env: dict[str, str], url: str | None) -> tuple[str, str]:
    name = env.get("CAUSELOG_CLICKHOUSE_CLUSTER", "").strip()
    prefix = env.get("CAUSELOG_CLICKHOUSE_ZK_PATH", "").strip() or "/clickhouse/tables/{shard}"
    if name and url is None:
        raise ConfigError(f"CAUSELOG_CLICKHOUSE_CLUSTER={name!r} needs a ClickHouse server (CLICKHOUSE_URL); "
                          "the embedded store is one engine")
    # Both are written into DDL: the name unquoted (ON CLUSTER, Distributed), the prefix in quotes.
    if name and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"CAUSELOG_CLICKHOUSE_CLUSTER={name!r} may hold only letters, digits, '_', '.' and '-'")
    if not re.fullmatch(r"/[A-Za-z0-9_{}/.-]*", prefix):
        raise ConfigError(f"CAUSELOG_CLICKHOUSE_ZK_PATH={prefix!r} must start with '/' and hold only letters, "
                          "digits, '_', '.', '-', '/' and {macros}")
    return name, prefix


def _path(env: dict[str, str], name: str) -> Path | None:
    return Path(env[name]).expanduser().resolve() if env.get(name) else None


def _deployment(env: dict[str, str]) -> str | None:
    raw = env.get("CAUSELOG_DEPLOYMENT") or None
    # It becomes part of the checkpoints' origin and of the signing key's name.
    if raw is not None and not re.fullmatch(r"[A-Za-z0-9._/-]+", raw):
        raise ConfigError(f"CAUSELOG_DEPLOYMENT={raw!r} may hold only letters, digits, '.', '_', '-' and '/'")
    return raw


def _choice(env: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name) or allowed[0]
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
    return raw
