"""The Grafana provisioning under deploy/grafana: dashboard JSON structure, data source uids,
every ClickHouse panel query run on the embedded store after the migrations (with the plugin's
macros and the dashboard variables expanded the way Grafana does), and every PromQL expression
parsed, naming only metrics documented in deploy/grafana/README.md.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from factories import event_dict

from pipeline.errors import QueryError
from pipeline.model import decode
from pipeline.store import EventWriter, Pending, Position, Store

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
CH_TYPE = "grafana-clickhouse-datasource"
PROM_TYPE = "prometheus"
ALERT_COLUMNS = ("id", "rule_id", "title", "level", "time", "event_ids", "chain_id")

# The events the queries run on: 60 events over 6 hours, two scopes.
T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
N_EVENTS = 60
TYPES = ("git.push", "deploy.succeeded", "config.changed", "db.query", "iam.role.assumed")
ASSURANCES = ("none", "claimed", "authenticated", "mfa", "signed")


# -- loading ---------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    data = orjson.loads(path.read_bytes())
    assert isinstance(data, dict), f"{path.name}: a dashboard is a JSON object"
    return data


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of the provisioned data sources."""
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "causelog.yaml").read_text())
    return {ds["uid"]: ds["type"] for ds in doc["datasources"]}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def targets(ds_type: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target) for every query of one data source type."""
    found = []
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for t in p.get("targets", []):
                if t["datasource"]["type"] == ds_type:
                    found.append((path.name, p, t))
    return found


def documented_metrics() -> set[str]:
    text = (GRAFANA / "README.md").read_text()
    return set(re.findall(r"^\| `(causelog_[a-z_]+)` \|", text, flags=re.M))


# -- Grafana's expansion of the ClickHouse plugin's macros and the dashboard variables ---------


def _macro_calls(sql: str, name: str) -> list[tuple[int, int, list[str]]]:
    """(start, end, args) of each ``$__name(...)`` call, args split on top-level commas."""
    calls = []
    for m in re.finditer(re.escape(f"$__{name}("), sql):
        depth, args, cur = 1, [], []
        i = m.end()
        while depth:
            c = sql[i]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            if depth == 1 and c == ",":
                args.append("".join(cur).strip())
                cur = []
            elif depth:
                cur.append(c)
            i += 1
        args.append("".join(cur).strip())
        calls.append((m.start(), i, args))
    return calls


def _replace_macro(sql: str, name: str, render: Any) -> str:
    for start, end, args in reversed(_macro_calls(sql, name)):
        sql = sql[:start] + render(args) + sql[end:]
    return sql


def expand(sql: str, *, database: str, start: datetime, end: datetime, interval_s: int,
           scope: list[str] | None) -> str:
    """The SQL the plugin sends for a time range, an interval and a ``scope`` selection
    (``None`` = All), as its backend macros and Grafana's variable interpolation produce it."""
    lo, hi = int(start.timestamp()), int(end.timestamp())
    lo_ms, hi_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    # $__conditionalAll(cond, $var): the condition when values are selected, 1=1 for All.
    sql = _replace_macro(sql, "conditionalAll", lambda a: "1=1" if scope is None else a[0])
    sql = _replace_macro(sql, "timeFilter_ms", lambda a: f"{a[0]} >= fromUnixTimestamp64Milli({lo_ms}) "
                         f"AND {a[0]} <= fromUnixTimestamp64Milli({hi_ms})")
    sql = _replace_macro(sql, "timeFilter", lambda a: f"{a[0]} >= toDateTime({lo}) AND {a[0]} <= toDateTime({hi})")
    sql = _replace_macro(sql, "timeInterval_ms", lambda a: f"toStartOfInterval(toDateTime64({a[0]}, 3), "
                         f"INTERVAL {interval_s * 1000} millisecond)")
    sql = _replace_macro(sql, "timeInterval", lambda a: f"toStartOfInterval(toDateTime({a[0]}), "
                         f"INTERVAL {interval_s} second)")
    values = scope if scope is not None else ["acme"]
    for token, value in (
        ("$__fromTime_ms", f"fromUnixTimestamp64Milli({lo_ms})"), ("$__toTime_ms", f"fromUnixTimestamp64Milli({hi_ms})"),
        ("$__fromTime", f"toDateTime({lo})"), ("$__toTime", f"toDateTime({hi})"),
        ("$__interval_s", str(interval_s)), ("${database}", database), ("$database", database),
        ("${scope:singlequote}", ",".join(f"'{v}'" for v in values)), ("$scope", ",".join(values)),
    ):
        sql = sql.replace(token, value)
    return sql


# -- structure -------------------------------------------------------------------------------


def test_there_are_both_dashboards() -> None:
    names = {p.name for p in DASHBOARDS}
    assert {"pipeline-health.json", "incidents.json"} <= names


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    d = load(path)
    for key in ("uid", "title", "panels", "schemaVersion", "time", "templating"):
        assert key in d, f"{path.name}: missing {key!r}"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"]), d["uid"]
    assert "id" not in d or d["id"] is None, "provisioned dashboards must not carry a database id"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids {sorted(ids)}"
    for p in panels(d):
        assert p.get("title"), f"{path.name}: panel {p['id']} has no title"
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, f"panel {p['id']} gridPos {pos}"
        if p["type"] == "row":
            continue
        assert p.get("description"), f"{path.name}: panel {p['title']!r} has no description"
        assert p["targets"], f"{path.name}: panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), f"panel {p['title']!r}: duplicate refIds {refs}"
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], f"panel {p['title']!r}: target and panel data sources differ"


def test_no_two_panels_overlap() -> None:
    for path in DASHBOARDS:
        cells: dict[tuple[int, int], int] = {}
        for p in panels(load(path)):
            g = p["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{path.name}: panels {cells[(x, y)]} and {p['id']} overlap"
                    cells[(x, y)] = p["id"]


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_every_datasource_is_provisioned_with_its_type() -> None:
    provisioned = provisioned_datasources()
    assert provisioned == {"causelog-prometheus": PROM_TYPE, "causelog-clickhouse": CH_TYPE}
    for path in DASHBOARDS:
        d = load(path)
        used = [p["datasource"] for p in panels(d) if p["type"] != "row"]
        used += [v["datasource"] for v in d["templating"]["list"] if "datasource" in v]
        for ds in used:
            assert provisioned.get(ds["uid"]) == ds["type"], f"{path.name}: unknown data source {ds}"


def test_clickhouse_datasource_uses_the_plugin_v4_settings() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "causelog.yaml").read_text())
    (ch,) = [ds for ds in doc["datasources"] if ds["type"] == CH_TYPE]
    # the plugin's dsconfig: host, port, protocol (native|http), username; password in secureJsonData
    assert {"host", "port", "protocol", "username", "defaultDatabase"} <= set(ch["jsonData"])
    assert ch["jsonData"]["protocol"] in ("native", "http") and "password" in ch["secureJsonData"]
    assert ch["jsonData"]["defaultDatabase"] == "causelog"


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "causelog.yaml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/causelog"


def test_clickhouse_targets_use_the_plugin_query_format() -> None:
    found = targets(CH_TYPE)
    assert len(found) >= 15
    for name, p, t in found:
        assert t["editorType"] == "sql" and t["rawSql"].strip(), f"{name}: {p['title']}"
        # grafana-clickhouse-datasource v4: format 0 = time series, 1 = table
        assert t["format"] == (0 if p["type"] == "timeseries" else 1), f"{name}: {p['title']} format {t['format']}"
        if t["format"] == 0:
            assert "$__timeInterval(" in t["rawSql"], f"{p['title']}: a time series groups by $__timeInterval"
        assert "$__timeFilter(" in t["rawSql"], f"{p['title']}: every query is bounded by the dashboard range"


# -- the ClickHouse queries on the embedded store -----------------------------------------------


def _event(i: int, scope: str) -> Pending:
    d = event_dict(i, scope=scope, source="dash")
    d["type"] = TYPES[i % len(TYPES)]
    d["time"] = (T0 + timedelta(minutes=6 * i)).isoformat()
    d["outcome"] = "failure" if i % 4 == 0 else "success"
    d["actor"]["assurance"] = ASSURANCES[i % len(ASSURANCES)]
    raw = orjson.dumps(d)
    return Pending(decode(raw), raw, Position("causelog.changes", 0, i))


def _ensure_alerts(store: Store) -> None:
    """The rules migration creates ``alerts``; until it is merged, a table with the agreed columns
    stands in so the alert panels' SQL is checked all the same."""
    db = store.database
    exists = store.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'alerts'",
                         {"db": db}).rows[0][0]
    if not exists:
        store.command(f"CREATE TABLE {db}.alerts (id String, rule_id String, title String, "
                      "level LowCardinality(String), time DateTime64(6, 'UTC'), event_ids Array(String), "
                      "chain_id String) ENGINE = MergeTree ORDER BY (time, id)")
    columns = {r[0] for r in store.query("SELECT name FROM system.columns WHERE database = {db:String} "
                                         "AND table = 'alerts'", {"db": db}).rows}
    assert set(ALERT_COLUMNS) <= columns, f"alerts lacks {set(ALERT_COLUMNS) - columns}"
    store.command(f"INSERT INTO {db}.alerts (id, rule_id, title, level, time, event_ids, chain_id) VALUES "
                  "('a1', 'r1', 'deploy without review', 'high', '2026-11-27 01:00:00', ['e1', 'e2'], 'c1')")


@pytest.fixture
def dashboard_store(store: Store) -> Store:
    EventWriter(store).write([_event(i, "acme" if i % 3 else "globex") for i in range(N_EVENTS)])
    _ensure_alerts(store)
    return store


def _run(store: Store, sql: str, scope: list[str] | None = None) -> tuple[list[str], list[list[Any]]]:
    expanded = expand(sql, database=store.database, start=T0 - timedelta(hours=1), end=T0 + timedelta(hours=7),
                      interval_s=1800, scope=scope)
    assert "$" not in expanded, f"unexpanded macro or variable in: {expanded}"
    try:
        result = store.readonly(expanded)
    except QueryError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{exc}\n--- SQL ---\n{expanded}")
    return result.columns, result.rows


def test_every_clickhouse_panel_query_runs_and_returns_rows(dashboard_store: Store) -> None:
    for name, p, t in targets(CH_TYPE):
        columns, rows = _run(dashboard_store, t["rawSql"])
        assert rows, f"{name}: panel {p['title']!r} returned no rows"
        if t["format"] == 0:
            # A time series: the first column is the time, and every row is inside the range.
            assert all(isinstance(r[0], datetime) for r in rows), f"{p['title']}: first column is not a time"
            assert T0 - timedelta(hours=1) <= min(r[0] for r in rows).replace(tzinfo=UTC)


def test_stat_panels_count_what_was_stored(dashboard_store: Store) -> None:
    by_title = {p["title"]: t["rawSql"] for _, p, t in targets(CH_TYPE)}
    failures = sum(1 for i in range(N_EVENTS) if i % 4 == 0)
    assert _run(dashboard_store, by_title["Changes"])[1] == [[N_EVENTS]]
    assert _run(dashboard_store, by_title["Failures"])[1] == [[failures]]
    assert _run(dashboard_store, by_title["Actors"])[1] == [[17]]


def test_scope_variable_filters_every_events_panel(dashboard_store: Store) -> None:
    by_title = {p["title"]: t["rawSql"] for _, p, t in targets(CH_TYPE)}
    globex = sum(1 for i in range(N_EVENTS) if i % 3 == 0)
    assert _run(dashboard_store, by_title["Changes"], ["globex"])[1] == [[globex]]
    assert _run(dashboard_store, by_title["Changes"], ["acme", "globex"])[1] == [[N_EVENTS]]
    for name, p, t in targets(CH_TYPE):
        if "${database}.events" in t["rawSql"] and p["type"] != "stat":
            assert _run(dashboard_store, t["rawSql"], ["nobody"])[1] == [], f"{name}: {p['title']} ignores $scope"


def test_assurance_mix_adds_up(dashboard_store: Store) -> None:
    by_title = {p["title"]: t["rawSql"] for _, p, t in targets(CH_TYPE)}
    rows = _run(dashboard_store, by_title["Assurance mix"])[1]
    assert dict((a, n) for a, n in rows) == {a: N_EVENTS // len(ASSURANCES) for a in ASSURANCES}


def test_scope_variable_query_lists_the_scopes(dashboard_store: Store) -> None:
    (incidents,) = [load(p) for p in DASHBOARDS if p.name == "incidents.json"]
    (var,) = [v for v in incidents["templating"]["list"] if v["name"] == "scope"]
    rows = _run(dashboard_store, var["query"]["rawSql"])[1]
    assert rows == [["acme"], ["globex"]]


def test_macro_expansion_matches_the_plugin() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    sql = "SELECT $__timeInterval(time) AS t FROM ${database}.events WHERE $__timeFilter(time) AND " \
          "$__conditionalAll(scope IN (${scope:singlequote}), $scope) AND x > $__fromTime"
    all_ = expand(sql, database="db", start=start, end=end, interval_s=60, scope=None)
    assert all_ == ("SELECT toStartOfInterval(toDateTime(time), INTERVAL 60 second) AS t FROM db.events WHERE "
                    "time >= toDateTime(1767225600) AND time <= toDateTime(1767229200) AND 1=1 AND "
                    "x > toDateTime(1767225600)")
    some = expand(sql, database="db", start=start, end=end, interval_s=60, scope=["a", "b"])
    assert "AND scope IN ('a','b') AND" in some


# -- PromQL ---------------------------------------------------------------------------------


def _promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "30s").replace("$__range", "6h")


def test_every_promql_expression_parses() -> None:
    promql_parser = pytest.importorskip("promql_parser", reason="promql-parser (dev extra) is not installed")
    found = targets(PROM_TYPE)
    assert len(found) >= 20
    for name, p, t in found:
        try:
            promql_parser.parse(_promql(t["expr"]))
        except ValueError as exc:
            pytest.fail(f"{name}: panel {p['title']!r}: {t['expr']!r}: {exc}")


def test_a_broken_promql_expression_is_caught() -> None:
    promql_parser = pytest.importorskip("promql_parser", reason="promql-parser (dev extra) is not installed")
    with pytest.raises(ValueError):
        promql_parser.parse(_promql("sum by (le (rate(causelog_batch_seconds_bucket[$__rate_interval]))"))


def test_promql_names_only_documented_metrics() -> None:
    documented = documented_metrics()
    assert "causelog_records_rejected_total" in documented and len(documented) >= 15
    used = set()
    for _, _, t in targets(PROM_TYPE):
        for name in re.findall(r"\bcauselog_[a-z_]+", t["expr"]):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used - documented == set(), f"undocumented metrics: {sorted(used - documented)}"
    assert documented - used == set(), f"documented but not on any panel: {sorted(documented - used)}"


def test_documented_metrics_follow_prometheus_naming() -> None:
    text = (GRAFANA / "README.md").read_text()
    rows = re.findall(r"^\| `(causelog_[a-z_]+)` \| ([a-z]+)", text, flags=re.M)
    assert rows
    for name, kind in rows:
        assert re.fullmatch(r"causelog(_[a-z]+)+", name), name
        if kind == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        else:
            assert not name.endswith("_total"), f"{kind} {name} must not end in _total"
        if kind == "histogram":
            assert name.endswith(("_seconds", "_bytes", "_records")), f"histogram {name} needs a unit suffix"
        assert not re.search(r"_(ms|milliseconds|minutes|kb|mb)(_|$)", name), f"{name}: use base units"
