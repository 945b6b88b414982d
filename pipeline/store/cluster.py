"""ClickHouse cluster mode (``CAUSELOG_CLICKHOUSE_CLUSTER``): every DDL statement rewritten for a cluster.

The migrations in ``schemas/clickhouse`` are written once, for a single engine. On a cluster,
:func:`cluster_statements` turns each statement into the statements a cluster needs, so every
query keeps its table names:

- ``CREATE TABLE db.t (...) ENGINE = XMergeTree(args) ...`` becomes ``db.t_local ON CLUSTER`` with
  ``ReplicatedXMergeTree('<zk prefix>/<db>/t', '{replica}', args)`` (and the non-replicated dedup
  window becomes ``replicated_deduplication_window``), plus ``db.t ON CLUSTER AS db.t_local ENGINE
  = Distributed(<cluster>, db, t_local, <sharding key>)`` in front of it;
- a materialized view is created ``ON CLUSTER`` and reads and writes the ``_local`` tables (an
  insert through ``db.events`` lands in ``events_local`` on one shard, whose views fill that
  shard's ``event_links_local``);
- a plain view is created ``ON CLUSTER`` unchanged (it reads the Distributed tables);
- ``ALTER TABLE`` goes ``ON CLUSTER`` to the local table, and column changes to the Distributed
  table too (added columns first locally, dropped columns first from the Distributed table);
  ``DELETE``, ``UPDATE``, indexes, projections, TTLs and settings only exist on the local table;
- ``DROP``, ``TRUNCATE`` and ``OPTIMIZE`` go ``ON CLUSTER`` (to both tables, the local one);
- ``INSERT ... SELECT`` (a backfill) is unchanged: it writes through the Distributed table, run
  with :data:`INSERT_SETTINGS`.

Anything else is refused with the statement named, never passed through half-converted.

:data:`SHARDING_KEYS` fixes which shard holds each row (README, "ClickHouse server and cluster
mode", says why each key). ``FINAL``, ``ReplacingMergeTree`` merges and insert deduplication work
within one shard only, so rows that replace or repeat each other must share their key, and the
tables a materialized view fills from ``events`` must be sharded like ``events`` (the view writes
on the event's shard; a direct insert through their Distributed table must agree).

Pure: text in, text out; the store (pipeline/store/client.py) runs the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import StoreError

__all__ = [
    "CLUSTER_NAME",
    "DEFAULT_ZK_PREFIX",
    "INSERT_SETTINGS",
    "QUERY_SETTINGS",
    "SHARDING_KEYS",
    "Cluster",
    "cluster_statements",
    "split_actions",
]

#: Sharding key of every table the migrations create, by table name (see the module docstring).
SHARDING_KEYS: dict[str, str] = {
    # Spread evenly; an event id always lands on the same shard, so a copy that slipped past the
    # writer's id check sits next to the original, and the views below write on that shard.
    "events": "cityHash64(id)",
    # Filled by event_links_mv on the shard of the event: same hash of the event id.
    "event_links": "cityHash64(event_id)",
    # Filled by session_issuers_mv (and the 008 backfill through the Distributed table): same
    # hash of the event id, so the view's row and a backfilled copy of it replace each other.
    "session_issuers": "cityHash64(event_id)",
    # Every repeat and the retraction of one edge (same sort key) on one shard: readers collapse
    # them with GROUP BY over that key.
    "chain_edges": "cityHash64(from_event, key, to_event)",
    # Repeats of one alias, and all aliases of one old chain, on one shard.
    "chain_aliases": "cityHash64(old_chain_id)",
    # All rows of one chain on one shard: its root is its least (root_time, root_id).
    "chain_roots": "cityHash64(chain_id)",
    # ReplacingMergeTree over the whole join: a pair's joins on one shard.
    "identities": "cityHash64(principal_a, principal_b)",
    # One log's checkpoints and pruned ranges together.
    "checkpoints": "cityHash64(topic, partition)",
    "pruned": "cityHash64(topic, partition)",
    # ReplacingMergeTree by id: a release replaces its hold (FINAL) only on the same shard.
    "holds": "cityHash64(id)",
    # ReplacingMergeTree by id: the rows of one alert replace each other.
    "alerts": "cityHash64(id)",
    "alert_deliveries": "cityHash64(alert_id)",
    # ReplacingMergeTree by version, read with FINAL.
    "schema_migrations": "version",
}

DEFAULT_ZK_PREFIX = "/clickhouse/tables/{shard}"
CLUSTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

#: Sent with every insert on a cluster. An insert through a Distributed table returns only when
#: every shard has the rows (one replica each; ``internal_replication`` copies them to the
#: others), with the insert's settings -- the dedup token among them -- forwarded to each shard.
#: The default background mode would queue them on the initiator: not yet queryable (the writer's
#: "already stored?" check would miss them) and sent later in merged batches. The old name is used
#: because every version knows it (newer ones call it ``distributed_foreground_insert``).
#: ``insert_deduplicate`` is on by default; sent so a server profile that turned it off cannot
#: silently disable the dedup token on the replicated tables.
INSERT_SETTINGS: dict[str, Any] = {"insert_distributed_sync": 1, "insert_deduplicate": 1}
#: Sent with every query on a cluster: an ``IN``/``JOIN`` over a second Distributed table reads it
#: whole (GLOBAL) instead of failing (the default ``deny``) or reading one shard's part (``local``).
QUERY_SETTINGS: dict[str, Any] = {"distributed_product_mode": "global"}

_NAME = r"(?P<name>[A-Za-z0-9_.`]+)"
_INE = r"(?P<ine>IF\s+NOT\s+EXISTS\s+)?"
_CREATE_TABLE = re.compile(rf"^CREATE\s+TABLE\s+{_INE}{_NAME}\s*(?P<body>\(.*)$", re.I | re.S)
_CREATE_MV = re.compile(
    rf"^CREATE\s+MATERIALIZED\s+VIEW\s+{_INE}{_NAME}\s+TO\s+(?P<to>[A-Za-z0-9_.]+)\s+(?P<rest>AS\b.*)$", re.I | re.S
)
_CREATE_VIEW = re.compile(rf"^CREATE\s+(?P<orr>OR\s+REPLACE\s+)?VIEW\s+{_INE}{_NAME}\s+(?P<rest>AS\b.*)$", re.I | re.S)
_ALTER = re.compile(rf"^ALTER\s+TABLE\s+{_NAME}\s+(?P<actions>.*?)(?P<settings>\s+SETTINGS\s+[^()]*)?$", re.I | re.S)
_DROP = re.compile(
    rf"^DROP\s+(?P<kind>TABLE|VIEW|DICTIONARY)\s+(?P<ie>IF\s+EXISTS\s+)?{_NAME}(?P<sync>\s+SYNC)?$", re.I | re.S
)
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?(?P<ie>IF\s+EXISTS\s+)?{_NAME}(?P<rest>.*)$", re.I | re.S)
_OPTIMIZE = re.compile(rf"^OPTIMIZE\s+TABLE\s+{_NAME}(?P<rest>.*)$", re.I | re.S)
_INSERT = re.compile(r"^INSERT\s+INTO\b", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>[A-Za-z]+)", re.I)
# ALTER actions on the local table only (the Distributed table has no parts, indexes or TTLs).
_LOCAL_ONLY = (
    "ADD INDEX", "DROP INDEX", "MATERIALIZE INDEX", "CLEAR INDEX", "ADD PROJECTION", "DROP PROJECTION",
    "MATERIALIZE PROJECTION", "CLEAR PROJECTION", "ADD CONSTRAINT", "DROP CONSTRAINT", "DELETE", "UPDATE",
    "MODIFY TTL", "REMOVE TTL", "MATERIALIZE TTL", "MODIFY SETTING", "RESET SETTING", "MODIFY ORDER",
    "MATERIALIZE COLUMN", "CLEAR COLUMN", "DROP PARTITION", "DROP PART", "DETACH", "ATTACH", "FREEZE",
    "UNFREEZE",
)  # fmt: skip
# ALTER actions that change the columns: both tables, so the Distributed table keeps the same columns.
_BOTH = ("ADD COLUMN", "DROP COLUMN", "MODIFY COLUMN", "RENAME COLUMN", "COMMENT COLUMN")


@dataclass(frozen=True)
class Cluster:
    """A ClickHouse cluster (``remote_servers`` name) and the ZooKeeper/Keeper path prefix of its
    replicated tables (``{shard}`` and ``{replica}`` are the servers' macros)."""

    name: str
    zk_prefix: str = DEFAULT_ZK_PREFIX

    def __post_init__(self) -> None:
        if not CLUSTER_NAME.fullmatch(self.name):
            raise StoreError(f"cluster name {self.name!r} may hold only letters, digits, '_', '.' and '-'")
        if not self.zk_prefix.startswith("/") or "'" in self.zk_prefix or "\\" in self.zk_prefix:
            raise StoreError(f"ZooKeeper path prefix {self.zk_prefix!r} must start with '/' and hold no quote")

    @property
    def on(self) -> str:
        """The ``ON CLUSTER`` clause."""
        return f"ON CLUSTER {_quote_name(self.name)}"

    def zk_path(self, database: str, table: str) -> str:
        """The Keeper path of a table's replicas: ``<prefix>/<database>/<table>``."""
        return f"{self.zk_prefix.rstrip('/')}/{database}/{table}"

    def statements(self, statement: str, database: str) -> list[str]:
        """:func:`cluster_statements` of one statement on this cluster."""
        return cluster_statements(statement, database, self)


def local(table: str) -> str:
    """The name of a table's local (replicated, per shard) part."""
    return f"{table}_local"


def cluster_statements(statement: str, database: str, cluster: Cluster) -> list[str]:
    """The statements that do on ``cluster`` what ``statement`` does on one engine, in order.

    StoreError when the statement cannot be run on a cluster (an engine that is not a
    MergeTree, a table without a sharding key, a statement kind not handled).
    """
    sql = statement.strip().rstrip(";").strip()
    if m := _CREATE_TABLE.match(sql):
        return _create_table(m, database, cluster, sql)
    if m := _CREATE_MV.match(sql):
        target = _table(m.group("to"), database, sql)
        if target not in SHARDING_KEYS:
            raise StoreError(_refusal(sql, f"its target table {target!r} has no sharding key"))
        return [f"CREATE MATERIALIZED VIEW {_ine(m)}{m.group('name')} {cluster.on} "
                f"TO {_local_name(m.group('to'))} {_to_local(m.group('rest'), database)}"]
    if m := _CREATE_VIEW.match(sql):
        orr = "OR REPLACE " if m.group("orr") else ""
        return [f"CREATE {orr}VIEW {_ine(m)}{m.group('name')} {cluster.on} {m.group('rest')}"]
    if m := _ALTER.match(sql):
        return _alter(m, database, cluster, sql)
    if _INSERT.match(sql):
        return [sql]
    if m := _DROP.match(sql):
        head = f"DROP {m.group('kind').upper()} {'IF EXISTS ' if m.group('ie') else ''}"
        sync = " SYNC" if m.group("sync") else ""
        names = [m.group("name")]
        if _table(m.group("name"), database, sql) in SHARDING_KEYS:
            names.append(_local_name(m.group("name")))  # the Distributed table first: it reads the local one
        return [f"{head}{n} {cluster.on}{sync}" for n in names]
    if m := _TRUNCATE.match(sql):
        name = _sharded(m.group("name"), database, sql)
        return [f"TRUNCATE TABLE {'IF EXISTS ' if m.group('ie') else ''}{name} {cluster.on}{m.group('rest')}"]
    if m := _OPTIMIZE.match(sql):
        return [f"OPTIMIZE TABLE {_sharded(m.group('name'), database, sql)} {cluster.on}{m.group('rest')}"]
    raise StoreError(_refusal(sql, "this kind of statement is not handled in cluster mode"))


def _create_table(m: re.Match[str], database: str, cluster: Cluster, sql: str) -> list[str]:
    name = m.group("name")
    table = _table(name, database, sql)
    key = SHARDING_KEYS.get(table)
    if key is None:
        raise StoreError(_refusal(sql, f"table {table!r} has no sharding key (add it to "
                                       "pipeline/store/cluster.py SHARDING_KEYS)"))
    body = m.group("body")
    columns_end = _closing(body, 0)
    columns, tail = body[: columns_end + 1], body[columns_end + 1:]
    e = _ENGINE.search(tail)
    if e is None or not e.group("engine").endswith("MergeTree") or e.group("engine").startswith("Replicated"):
        found = e.group("engine") if e else "none"
        raise StoreError(_refusal(sql, f"engine {found} is not a (non-replicated) MergeTree engine"))
    args, after = "", tail[e.end():]
    stripped = after.lstrip()
    if stripped.startswith("("):
        close = _closing(stripped, 0)
        args, after = stripped[1:close].strip(), stripped[close + 1:]
    zk = ", ".join([f"'{cluster.zk_path(database, table)}'", "'{replica}'", *([args] if args else [])])
    engine = f"ENGINE = Replicated{e.group('engine')}({zk})"
    # Replicated tables deduplicate inserts in Keeper, within a window of their own.
    after = re.sub(r"\bnon_replicated_deduplication_window\b", "replicated_deduplication_window", after)
    local_name = _local_name(name)
    head = [f"CREATE TABLE {_ine(m)}{local_name} {cluster.on}", columns, tail[:e.start()].strip()]
    return [
        "\n".join(p for p in head if p) + f"\n{engine}{after}",
        f"CREATE TABLE {_ine(m)}{name} {cluster.on} AS {local_name}\n"
        f"ENGINE = Distributed({_quote_name(cluster.name)}, {_quote_name(database)}, {local(table)}, {key})",
    ]


def _alter(m: re.Match[str], database: str, cluster: Cluster, sql: str) -> list[str]:
    name = m.group("name")
    _sharded(name, database, sql)
    actions = split_actions(m.group("actions"))
    settings = m.group("settings") or ""
    both: list[str] = []
    for action in actions:
        words = " ".join(action.upper().split()[:2])
        if any(words.startswith(w) for w in _BOTH):
            both.append(action)
        elif not any(words.startswith(w) for w in _LOCAL_ONLY):
            raise StoreError(_refusal(sql, f"ALTER action {words!r} is not handled in cluster mode"))
    out = [f"ALTER TABLE {_local_name(name)} {cluster.on} {', '.join(actions)}{settings}"]
    if both:
        dist = f"ALTER TABLE {name} {cluster.on} {', '.join(both)}{settings}"
        # A column is added to the shards before the Distributed table names it, and leaves the
        # Distributed table before the shards drop it.
        dropping = any(a.upper().split()[:2] == ["DROP", "COLUMN"] for a in both)
        out = [dist, *out] if dropping else [*out, dist]
    return out


def split_actions(text: str) -> list[str]:
    """The comma-separated actions of an ALTER, ignoring commas inside parentheses and quotes."""
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == "'" and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        if quoted:
            continue
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _closing(text: str, at: int) -> int:
    """Index of the parenthesis closing the one at ``at`` (quotes respected)."""
    depth, quoted = 0, False
    for i in range(at, len(text)):
        ch = text[i]
        if ch == "'" and text[i - 1] != "\\":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return i
    raise StoreError(f"unbalanced parentheses in {_first(text)!r}")


def _to_local(select: str, database: str) -> str:
    """A view's SELECT reading the local tables: an insert into a shard's ``events_local`` is what
    fires a materialized view on that shard."""
    names = "|".join(sorted((re.escape(t) for t in SHARDING_KEYS), key=len, reverse=True))
    return re.sub(rf"\b{re.escape(database)}\.({names})\b(?!\.)", lambda t: f"{t.group(0)}_local", select)


def _table(name: str, database: str, sql: str) -> str:
    db, _, table = name.replace("`", "").rpartition(".")
    if db and db != database:
        raise StoreError(_refusal(sql, f"it names database {db!r}, not {database!r}"))
    return table


def _sharded(name: str, database: str, sql: str) -> str:
    """The local table behind ``name``; StoreError if it is not a table the migrations shard."""
    if _table(name, database, sql) not in SHARDING_KEYS:
        raise StoreError(_refusal(sql, f"{name} is not a sharded table"))
    return _local_name(name)


def _local_name(name: str) -> str:
    return f"{name.replace('`', '')}_local"


def _ine(m: re.Match[str]) -> str:
    return "IF NOT EXISTS " if m.group("ine") else ""


def _quote_name(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"`{name}`"


def _first(sql: str) -> str:
    return " ".join(sql.split())[:100]


def _refusal(sql: str, why: str) -> str:
    return f"cannot run {_first(sql)!r} on a ClickHouse cluster: {why}"
