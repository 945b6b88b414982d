"""ClickHouse cluster mode (``CAUSELOG_CLICKHOUSE_CLUSTER``, pipeline/store/cluster.py).

No ClickHouse server can run here, so the server code path is covered by what it sends:

- every statement of every migration is rewritten, and each result parses with ClickHouse's own
  parser (chDB's ``formatQuery``) and is, ``ON CLUSTER`` and the replication arguments aside, the
  very statement of the file on the ``_local`` table;
- a recording fake of the clickhouse-connect client, behind the real ``Store``, ``migrate()``,
  the event writer, retention and ``open_store``, shows the DDL, inserts and settings sent;
- cluster_emulation.py (a child process) runs the rewrite on chDB with a one-shard cluster of
  itself: Distributed tables, views between local tables, inserts with the dedup token through
  the Distributed tables, and the named queries answering exactly as on a plain database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from factories import event_dict

from pipeline.cli.main import cli
from pipeline.correlate.partition import AliasRow, EdgeRow
from pipeline.errors import ConfigError, StoreError
from pipeline.model import decode
from pipeline.settings import load
from pipeline.store import EventWriter, Pending, Position, Store, migrate
from pipeline.store import client as client_module
from pipeline.store.cluster import SHARDING_KEYS, Cluster, cluster_statements
from pipeline.store.grants import Grants, grants_sql, statements
from pipeline.store.migrations import SCHEMA_MIGRATIONS, discover
from pipeline.store.writer import batch_token

DB = "causelog"
PROD = Cluster("prod")
UNIT = Path(__file__).resolve().parent
SYNC = {"insert_distributed_sync": 1, "insert_deduplicate": 1}  # sent with every insert on a cluster


class Recorder:
    """A fake clickhouse-connect client: records every command, query and insert with its
    settings; a query answers the rows of the first ``answers`` fragment found in its SQL."""

    def __init__(self, answers: dict[str, list[list[Any]]] | None = None) -> None:
        self.answers = answers or {}
        self.commands: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []
        self.inserts: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.path = "/nowhere"

    def command(self, sql: str, parameters: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> None:
        self.commands.append((sql, parameters, settings))

    def query(self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
              column_formats: dict[str, str] | None = None) -> SimpleNamespace:
        self.queries.append(sql)
        rows = next((rows for fragment, rows in self.answers.items() if fragment in sql), [])
        width = len(rows[0]) if rows else 1
        return SimpleNamespace(column_names=[f"c{i}" for i in range(width)], result_rows=rows,
                               result_columns=[list(c) for c in zip(*rows, strict=True)])

    def insert(self, table: str, data: Any, column_names: list[str], database: str, settings: dict[str, Any],
               column_oriented: bool, column_type_names: list[str] | None = None) -> None:
        self.inserts.append({"table": table, "database": database, "columns": column_names,
                             "settings": settings, "data": data, "types": column_type_names})

    def close(self) -> None:
        pass


def server(recorder: Recorder, cluster: Cluster | None = PROD) -> Store:
    return Store(recorder, DB, embedded=False, where="recorder", cluster=cluster)


def every_statement() -> list[tuple[str, str]]:
    """(file, statement) of every migration, and the schema_migrations table."""
    out = [("schema_migrations", SCHEMA_MIGRATIONS.replace("{database}", DB))]
    return out + [(f"{m.version:03d}_{m.name}.sql", st) for m in discover() for st in m.statements(DB)]


def formatted(store: Store, sql: str) -> str:
    return str(store.query("SELECT formatQuery({q:String})", {"q": sql}).rows[0][0])


def one_engine(sql: str) -> str:
    """A cluster statement without ON CLUSTER and replication: what it does on each node."""
    sql = sql.replace(f" {PROD.on}", "")
    sql = re.sub(r"ENGINE = Replicated(\w+)\('[^']*', '\{replica\}'\)", r"ENGINE = \1", sql)
    sql = re.sub(r"ENGINE = Replicated(\w+)\('[^']*', '\{replica\}', ", r"ENGINE = \1(", sql)
    return sql.replace("replicated_deduplication_window", "non_replicated_deduplication_window")


def on_local(sql: str) -> str:
    names = "|".join(sorted(SHARDING_KEYS, key=len, reverse=True))
    return re.sub(rf"\b{DB}\.({names})\b", lambda m: f"{m.group(0)}_local", sql)


# -- the rewrite of every migration --------------------------------------------------------------


@pytest.mark.parametrize("where", sorted({w for w, _ in every_statement()}))
def test_every_migration_statement_has_a_cluster_form_clickhouse_parses(session_store: Store, where: str) -> None:
    for _, original in [(w, s) for w, s in every_statement() if w == where]:
        out = cluster_statements(original, DB, PROD)
        for sql in out:
            text = formatted(session_store, sql)  # raises on a syntax error
            assert ("ON CLUSTER prod" in text) != sql.startswith("INSERT"), sql
        kind = original.split()[0].upper()
        if original.startswith("CREATE TABLE"):
            local, dist = out
            # Replication aside, the local table is the file's table, column for column.
            assert formatted(session_store, one_engine(local)) == formatted(session_store, on_local(original))
            table = re.match(r"CREATE TABLE IF NOT EXISTS causelog\.(\w+)", original).group(1)  # type: ignore[union-attr]
            assert f"'/clickhouse/tables/{{shard}}/causelog/{table}', '{{replica}}'" in local
            assert dist == (f"CREATE TABLE IF NOT EXISTS causelog.{table} ON CLUSTER prod AS causelog.{table}_local\n"
                            f"ENGINE = Distributed(prod, causelog, {table}_local, {SHARDING_KEYS[table]})")
        elif original.startswith("CREATE MATERIALIZED VIEW"):
            (mv,) = out
            assert formatted(session_store, one_engine(mv)) == formatted(session_store, on_local(original))
            assert re.search(r"TO causelog\.\w+_local AS", mv) and re.search(r"FROM causelog\.events_local\b", mv)
        elif original.startswith("CREATE VIEW"):
            assert [one_engine(s) for s in out] == [original]  # views read the Distributed tables
        elif kind == "ALTER":
            assert formatted(session_store, one_engine(out[0])) == formatted(session_store, on_local(original))
            # Columns change on the Distributed table too; indexes exist only on the local one.
            assert len(out) == (2 if "ADD COLUMN" in original else 1)
            if len(out) == 2:
                assert one_engine(out[1]) == original
        else:
            assert kind == "INSERT" and out == [original]


def test_engines_zk_paths_and_settings_of_the_replicated_tables() -> None:
    found = {}
    for _, original in every_statement():
        for sql in cluster_statements(original, DB, PROD):
            if m := re.match(r"CREATE TABLE IF NOT EXISTS causelog\.(\w+)_local ON CLUSTER prod\n", sql):
                found[m.group(1)] = re.search(r"ENGINE = (\w+\([^)]*\))", sql).group(1)  # type: ignore[union-attr]
                assert "non_replicated" not in sql
    assert set(found) == set(SHARDING_KEYS)  # every table the migrations create has a key, and no other
    assert found["events"] == "ReplicatedMergeTree('/clickhouse/tables/{shard}/causelog/events', '{replica}')"
    assert found["holds"] == ("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/causelog/holds', "
                              "'{replica}', created_at)")
    assert found["schema_migrations"] == (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/causelog/schema_migrations', '{replica}')")
    (events, _) = cluster_statements(every_statement()[1][1], DB, Cluster("prod", "/ch/{cluster}/{shard}/"))
    assert "SETTINGS replicated_deduplication_window = 10000" in events
    assert "ENGINE = ReplicatedMergeTree('/ch/{cluster}/{shard}/causelog/events', '{replica}')" in events


@pytest.mark.parametrize(("engine", "replicated"), [
    ("AggregatingMergeTree", "ReplicatedAggregatingMergeTree('/p/causelog/events', '{replica}')"),
    ("SummingMergeTree((a, b))", "ReplicatedSummingMergeTree('/p/causelog/events', '{replica}', (a, b))"),
    ("CollapsingMergeTree(sign)", "ReplicatedCollapsingMergeTree('/p/causelog/events', '{replica}', sign)"),
    ("VersionedCollapsingMergeTree(sign, v)",
     "ReplicatedVersionedCollapsingMergeTree('/p/causelog/events', '{replica}', sign, v)"),
    ("ReplacingMergeTree(v, deleted)", "ReplicatedReplacingMergeTree('/p/causelog/events', '{replica}', v, deleted)"),
])
def test_every_merge_tree_engine_gets_its_replicated_variant(session_store: Store, engine: str, replicated: str) -> None:
    sql = f"CREATE TABLE causelog.events (id String, a UInt8, b UInt8, sign Int8, v UInt8, deleted UInt8) " \
          f"ENGINE = {engine} ORDER BY id"
    local, dist = cluster_statements(sql, DB, Cluster("prod", "/p"))
    assert f"ENGINE = {replicated} ORDER BY id" in local and "Distributed" in dist
    assert "ON CLUSTER prod" in formatted(session_store, local)


@pytest.mark.parametrize(("sql", "why"), [
    ("CREATE TABLE causelog.events (id String) ENGINE = Memory", "engine Memory is not a"),
    ("CREATE TABLE causelog.events (id String) ENGINE = ReplicatedMergeTree('/x', 'r') ORDER BY id",
     "engine ReplicatedMergeTree is not a"),
    ("CREATE TABLE causelog.scratch (id String) ENGINE = MergeTree ORDER BY id", "table 'scratch' has no sharding key"),
    ("CREATE TABLE other.events (id String) ENGINE = MergeTree ORDER BY id", "names database 'other'"),
    ("CREATE MATERIALIZED VIEW causelog.mv TO causelog.scratch AS SELECT 1", "target table 'scratch'"),
    ("CREATE MATERIALIZED VIEW causelog.mv ENGINE = MergeTree ORDER BY x AS SELECT 1 AS x", "not handled"),
    ("ALTER TABLE causelog.v_timeline MODIFY QUERY SELECT 1", "not a sharded table"),
    ("ALTER TABLE causelog.events MODIFY QUERY SELECT 1", "ALTER action 'MODIFY QUERY'"),
    ("RENAME TABLE causelog.events TO causelog.old", "not handled"),
    ("SYSTEM STOP MERGES causelog.events", "not handled"),
])
def test_what_cannot_run_on_a_cluster_is_refused_by_name(sql: str, why: str) -> None:
    with pytest.raises(StoreError, match=re.escape(why)) as err:
        cluster_statements(sql, DB, PROD)
    assert "cannot run" in str(err.value) and sql.split()[0] in str(err.value)


def test_alter_drop_optimize_and_truncate_reach_the_right_tables(session_store: Store) -> None:
    def cs(sql: str) -> list[str]:
        out = cluster_statements(sql, DB, PROD)
        for s in out:
            formatted(session_store, s)
        return out

    assert cs("ALTER TABLE causelog.events DROP COLUMN x") == [  # leaves the Distributed table first
        "ALTER TABLE causelog.events ON CLUSTER prod DROP COLUMN x",
        "ALTER TABLE causelog.events_local ON CLUSTER prod DROP COLUMN x"]
    assert cs("ALTER TABLE causelog.events ADD COLUMN y UInt8 DEFAULT least(1, 2), ADD INDEX iy y TYPE minmax") == [
        "ALTER TABLE causelog.events_local ON CLUSTER prod ADD COLUMN y UInt8 DEFAULT least(1, 2), "
        "ADD INDEX iy y TYPE minmax",
        "ALTER TABLE causelog.events ON CLUSTER prod ADD COLUMN y UInt8 DEFAULT least(1, 2)"]
    assert cs("ALTER TABLE causelog.events DELETE WHERE id IN {ids:Array(String)} SETTINGS mutations_sync = 2") == [
        "ALTER TABLE causelog.events_local ON CLUSTER prod DELETE WHERE id IN {ids:Array(String)} "
        "SETTINGS mutations_sync = 2"]
    assert cs("ALTER TABLE causelog.events COMMENT COLUMN id 'a, b (c', ADD INDEX i id TYPE set(0)") == [
        "ALTER TABLE causelog.events_local ON CLUSTER prod COMMENT COLUMN id 'a, b (c', ADD INDEX i id TYPE set(0)",
        "ALTER TABLE causelog.events ON CLUSTER prod COMMENT COLUMN id 'a, b (c'"]
    assert cs("DROP TABLE IF EXISTS causelog.events SYNC") == [
        "DROP TABLE IF EXISTS causelog.events ON CLUSTER prod SYNC",
        "DROP TABLE IF EXISTS causelog.events_local ON CLUSTER prod SYNC"]
    assert cs("DROP VIEW causelog.v_timeline") == ["DROP VIEW causelog.v_timeline ON CLUSTER prod"]
    assert cs("OPTIMIZE TABLE causelog.holds FINAL") == ["OPTIMIZE TABLE causelog.holds_local ON CLUSTER prod FINAL"]
    assert cs("TRUNCATE TABLE causelog.pruned") == ["TRUNCATE TABLE causelog.pruned_local ON CLUSTER prod"]
    assert cluster_statements("CREATE VIEW causelog.v AS SELECT 1", DB, Cluster("eu-west.1")) == [
        "CREATE VIEW causelog.v ON CLUSTER `eu-west.1` AS SELECT 1"]


def test_rows_that_replace_or_repeat_each_other_share_a_shard() -> None:
    """The sharding key's columns are part of the sort key, so rows equal on the sort key (those a
    ReplacingMergeTree, FINAL, insert dedup or a reader's GROUP BY collapse) land on one shard; and
    the tables views fill from ``events`` hash the same event id as ``events``."""
    for _, sql in every_statement():
        if m := re.match(r"CREATE TABLE IF NOT EXISTS causelog\.(\w+)", sql):
            order = re.findall(r"ORDER BY \(?([\w, ]+)\)?", sql)[-1]  # the table's, after any projection's
            sort_key = {c.strip() for c in order.split(",")}
            key = SHARDING_KEYS[m.group(1)]
            columns = set(re.findall(r"\w+", re.sub(r"^cityHash64\((.*)\)$", r"\1", key)))
            assert columns <= sort_key, (m.group(1), key, sort_key)
    assert SHARDING_KEYS["events"] == "cityHash64(id)"
    views = [s for _, s in every_statement() if s.startswith("CREATE MATERIALIZED VIEW")]
    for view in views:
        target = re.search(r"TO causelog\.(\w+)", view).group(1)  # type: ignore[union-attr]
        assert "id AS event_id" in view and "FROM causelog.events" in view
        assert SHARDING_KEYS[target] == "cityHash64(event_id)"


# -- what the store sends -------------------------------------------------------------------------


def test_migrate_on_a_cluster_sends_on_cluster_ddl_and_sync_inserts() -> None:
    rec = Recorder()
    done = migrate(server(rec))
    assert [m.version for m in done] == [m.version for m in discover()]
    expected = [s for _, st in every_statement() for s in cluster_statements(st, DB, PROD)]
    assert [c[0] for c in rec.commands] == expected
    assert rec.commands[0][0].startswith("CREATE TABLE IF NOT EXISTS causelog.schema_migrations_local ON CLUSTER prod")
    for sql, _, settings in rec.commands:
        assert settings == (SYNC if sql.startswith("INSERT") else None), sql
    assert sum(sql.startswith("INSERT") for sql, _, _ in rec.commands) == 2  # 008 and 009 backfills
    assert "FROM causelog.schema_migrations FINAL" in rec.queries[0]  # through the Distributed table
    # The versions are recorded with the files' checksums, through the Distributed table.
    assert [(i["table"], i["database"], i["settings"], i["data"][0][2]) for i in rec.inserts] == [
        ("schema_migrations", DB, SYNC, m.checksum) for m in discover()]


def test_migrate_on_one_engine_sends_the_files_verbatim() -> None:
    rec = Recorder()
    migrate(server(rec, cluster=None))
    assert rec.commands == [(st, None, None) for _, st in every_statement()]
    assert all(i["settings"] == {} for i in rec.inserts)


def test_a_cluster_store_does_not_reapply_recorded_versions() -> None:
    applied = [[m.version, m.checksum] for m in discover()]
    rec = Recorder({"schema_migrations FINAL": applied})
    assert migrate(server(rec)) == []
    assert len(rec.commands) == 2 and not rec.inserts  # only the (IF NOT EXISTS) schema_migrations tables


def _pending(i: int, offset: int) -> Pending:
    raw = orjson.dumps(event_dict(i))
    return Pending(decode(raw), raw, Position("causelog.changes", 0, offset))


def test_the_writer_sends_its_dedup_token_through_the_distributed_tables_synchronously() -> None:
    rec = Recorder({"SELECT count()": [[0]]})
    batch = [_pending(i, 100 + i) for i in range(3)]
    edge = EdgeRow("acme", "commit:1", "commit", batch[1].event.id, batch[0].event.id, 1, False)
    alias = AliasRow("acme", "old", "new", 1, batch[1].event.id, 1)
    result = EventWriter(server(rec)).write(batch, edges=[edge], aliases=[alias])
    assert result.inserted == 3
    by_table = {i["table"]: i for i in rec.inserts}
    assert {i["database"] for i in rec.inserts} == {DB}
    assert set(by_table) == {"chain_edges", "chain_aliases", "chain_roots", "events"}  # never a _local table
    token = batch_token((p.position for p in batch), (p.event.id for p in batch))
    assert by_table["events"]["settings"] == {
        **SYNC, "insert_deduplication_token": token,
        "deduplicate_blocks_in_dependent_materialized_views": 1}
    for table in ("chain_edges", "chain_aliases", "chain_roots"):
        settings = by_table[table]["settings"]
        assert settings.items() >= SYNC.items() and settings["insert_deduplication_token"], table
    # On one engine: the same tokens, no Distributed setting.
    plain = Recorder({"SELECT count()": [[0]]})
    EventWriter(server(plain, cluster=None)).write(batch, edges=[edge], aliases=[alias])
    for mine, theirs in zip(rec.inserts, plain.inserts, strict=True):
        assert mine["settings"] == {**theirs["settings"], **SYNC}


def test_prune_deletes_on_the_local_tables_on_cluster_in_small_chunks() -> None:
    from datetime import timedelta

    from factories import BASE

    from pipeline.integrity.note import Signer
    from pipeline.integrity.retention import Policy
    from pipeline.store import retention

    old = BASE - timedelta(days=30)
    rows = [[f"e{i}", 0, -1, b"", "db.query", "t", "s", old] for i in range(2500)]
    rec = Recorder({"FROM causelog.holds FINAL": [], "SELECT id, kafka_partition": rows})
    result = retention.prune(server(rec), "t", Policy({"db.query": timedelta(days=1)}),
                             Signer.generate("causelog/unit"), BASE)
    assert result.removed == 2500
    sent = [(sql, len(params["ids"])) for sql, params, _ in rec.commands if params]
    assert sent == [
        (f"ALTER TABLE causelog.{t}_local ON CLUSTER prod DELETE WHERE {c} IN {{ids:Array(String)}} "
         "SETTINGS mutations_sync = 2", n)
        for n in (1000, 1000, 500) for t, c in (("events", "id"), ("event_links", "event_id"))]


def test_open_store_creates_the_database_on_cluster_and_every_connection_sends_the_query_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, session_store: Store,
) -> None:
    opened: list[dict[str, Any]] = []
    recorders: list[Recorder] = []

    def get_client(**kwargs: Any) -> Recorder:
        opened.append(kwargs)
        recorders.append(Recorder())
        return recorders[-1]

    monkeypatch.setattr(client_module.clickhouse_connect, "get_client", get_client)
    env = {"CAUSELOG_HOME": str(tmp_path), "CLICKHOUSE_URL": "http://u:secret@ch:8123", "CAUSELOG_CLICKHOUSE_CLUSTER":
           "prod", "CAUSELOG_CLICKHOUSE_ZK_PATH": "/ch/tables/{shard}"}
    store = client_module.open_store(load(env))
    assert store.cluster == Cluster("prod", "/ch/tables/{shard}")
    assert "secret" not in store.where and "cluster prod" in store.where
    assert opened[0] == {"dsn": "http://u:secret@ch:8123", "settings": {"distributed_product_mode": "global"}}
    assert recorders[0].commands == [("CREATE DATABASE IF NOT EXISTS causelog ON CLUSTER prod", None, None)]
    store.cancel("abc123")
    assert opened[1]["settings"] == {"distributed_product_mode": "global"}
    assert recorders[1].commands == [
        ("KILL QUERY ON CLUSTER prod WHERE startsWith(query, '/* causelog-query:abc123 */') ASYNC", None, None)]
    for sql, _, _ in recorders[0].commands + recorders[1].commands:
        assert "ON CLUSTER prod" in formatted(session_store, sql)
    store.reader().query("SELECT 1")
    wanted = opened[2]["settings"]
    assert wanted["distributed_product_mode"] == "global" and list(wanted)[-1] == "readonly"
    # Without the cluster setting nothing of this is sent.
    opened.clear()
    recorders.clear()
    plain = client_module.open_store(load({k: v for k, v in env.items() if "CLUSTER" not in k}))
    assert plain.cluster is None and opened[0] == {"dsn": "http://u:secret@ch:8123"}
    assert recorders[0].commands == [("CREATE DATABASE IF NOT EXISTS causelog", None, None)]


def test_cluster_settings_are_checked(tmp_path: Path) -> None:
    base = {"CAUSELOG_HOME": str(tmp_path), "CLICKHOUSE_URL": "http://ch:8123"}
    s = load(base)
    assert (s.clickhouse_cluster, s.clickhouse_zk_path) == ("", "/clickhouse/tables/{shard}")
    with pytest.raises(ConfigError, match="needs a ClickHouse server"):
        load({"CAUSELOG_HOME": str(tmp_path), "CAUSELOG_CLICKHOUSE_CLUSTER": "prod"})
    with pytest.raises(ConfigError, match="CAUSELOG_CLICKHOUSE_CLUSTER='a b'"):
        load({**base, "CAUSELOG_CLICKHOUSE_CLUSTER": "a b"})
    with pytest.raises(ConfigError, match="CAUSELOG_CLICKHOUSE_ZK_PATH"):
        load({**base, "CAUSELOG_CLICKHOUSE_CLUSTER": "prod", "CAUSELOG_CLICKHOUSE_ZK_PATH": "/x'); DROP"})
    readme = (UNIT.parents[1] / "README.md").read_text()
    for name in ("CAUSELOG_CLICKHOUSE_CLUSTER", "CAUSELOG_CLICKHOUSE_ZK_PATH"):
        assert re.search(rf"^\| `{name}` \|", readme, re.M), name


def test_grants_on_a_cluster_add_the_cluster_grant_and_the_query_setting(session_store: Store, tmp_path: Path) -> None:
    script = grants_sql(Grants(), passwords=("a", "b"), cluster="prod")
    found = statements(script)
    assert "GRANT CLUSTER ON *.* TO causelog_writer" in found
    (profile,) = [s for s in found if s.startswith("CREATE SETTINGS PROFILE")]
    assert "distributed_product_mode = 'global' CHANGEABLE_IN_READONLY" in profile
    for st in found:
        formatted(session_store, st)
    known = {r[0] for r in session_store.query("SELECT privilege FROM system.privileges").rows}
    assert "CLUSTER" in known
    assert "CLUSTER" not in grants_sql(Grants(), passwords=("a", "b"))  # one engine: unchanged
    env = {"CAUSELOG_HOME": str(tmp_path), "CLICKHOUSE_URL": "http://ch:8123", "CAUSELOG_CLICKHOUSE_CLUSTER": "prod"}
    done = CliRunner().invoke(cli, ["store", "grants"], env=env)
    assert done.exit_code == 0 and "GRANT CLUSTER ON *.* TO causelog_writer;" in done.output


# -- on chDB: a one-shard cluster of itself -----------------------------------------------------


def test_on_a_one_shard_cluster_of_chdb_the_answers_equal_a_plain_database(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(UNIT.parent), str(UNIT.parents[1])])}
    done = subprocess.run([sys.executable, str(UNIT / "cluster_emulation.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    tables = summary["tables"]
    for table, key in SHARDING_KEYS.items():
        assert tables[table] == ["Distributed", f"Distributed('causelog_test', 'clus', '{table}_local', {key})"]
        assert tables[f"{table}_local"][0].endswith("MergeTree")
    # The views hang on the local events table and write local tables.
    assert summary["views_of"] == {"events_local": ["event_links_mv", "session_issuers_mv"]}
    assert "TO clus.event_links_local" in summary["mv_sql"]["event_links_mv"]
    assert "TO clus.session_issuers_local" in summary["mv_sql"]["session_issuers_mv"]
    # Same rows behind the Distributed tables as in the plain database (each batch was written twice).
    for table, (plain, dist, local) in summary["counts"].items():
        assert plain == dist == local and plain > 0, table
    assert summary["differ"] == [] and all(summary["answers_nonempty"].values())
    assert summary["pruned"][0] == summary["pruned"][1] > 0
    assert all(p == d == loc for p, d, loc in summary["after_prune"].values())
    # A retried insert with the same token, through the Distributed table: stored once, links too.
    assert summary["token_retry"] == summary["token_batch"]
    assert summary["deleted_left"] == 0 and summary["holds_after_release"] == []
