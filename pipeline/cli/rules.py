"""``causelog rules``: validate rule files, test rules offline, hunt in history, run them with the alert sink."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape

from pipeline.errors import ConfigError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.metrics import RulesMetrics

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 400)


@click.group()
def rules() -> None:
    """Alert rules: Sigma detection and correlation rules plus causelog chain, absence and silence rules.

    Rules come from the built-in pack and every directory of CAUSELOG_RULES (colon-separated).
    """


def _load(paths: tuple[Path, ...], builtin: bool):  # type: ignore[no-untyped-def]
    from pipeline.rules.loader import load

    for p in paths:
        if not p.exists():
            raise ConfigError(f"{p}: no such rule file or directory")
    return load(list(paths), builtin=builtin)


@rules.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--no-builtin", is_flag=True, help="Leave out the built-in pack.")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list.")
@click.pass_obj
def validate(s: Settings, paths: tuple[Path, ...], no_builtin: bool, as_json: bool) -> None:
    """Load rules and report each bad one: file, rule id, the Sigma feature that is wrong or unsupported.

    PATHS are rule files or directories (read recursively); default: every directory of CAUSELOG_RULES.
    A bad rule never stops the others from loading. Exit code 1 when any rule is bad.
    """
    from pipeline.rules.loader import rule_dirs

    chosen = paths or tuple(rule_dirs(s.rules))
    rs = _load(chosen, not no_builtin)
    if as_json:
        click.echo(msgspec.json.encode([p.__dict__ for p in rs.problems]).decode())
    else:
        for p in rs.problems:
            out.print(f"[red]bad[/] {escape(str(p))}", highlight=False, soft_wrap=True)
        err.print(f"{len(rs)} rules loaded ({len(rs.detections)} detection, {len(rs.correlations)} correlation, "
                  f"{len(rs.absences)} absence, {len(rs.silences)} silence) from {len(rs.files)} files; "
                  f"{len(rs.problems)} bad", highlight=False, soft_wrap=True)
    if rs.problems:
        raise SystemExit(1)


def _print_alerts(alerts: list[Any], as_json: bool) -> None:
    """Alerts on stdout: a JSON list, or one line each (time, level, rule id, summary, events)."""
    if as_json:
        click.echo(msgspec.json.encode(alerts).decode())
        return
    for a in alerts:
        out.print(f"{a.time} [bold]{escape(a.level)}[/] {escape(a.rule_id)} {escape(a.summary)} "
                  f"[dim]{escape(','.join(a.event_ids[:5]))}[/]", highlight=False, soft_wrap=True)


def _offline_hasher(s: Settings) -> None:
    """Install a hash key for the normalizers of an offline run: the deployment's key when it
    exists (hashed values then match the stored ones), else a random one for this run only, so
    an offline test never creates a deployment key as a side effect."""
    import secrets

    from pipeline.hashkey import read_key
    from pipeline.sources import keyed

    path = s.hash_key_path
    keyed.use(keyed.Hasher(read_key(path) if path.exists() else secrets.token_bytes(32)))


@rules.command("test")
@click.argument("rule_paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--on", "files", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Source file or directory to run the rules over (repeatable).")
@click.option("--source", "kind", type=click.Choice(
    ["cloudtrail", "okta", "github-audit", "k8s-audit", "github-webhook", "terraform", "debezium", "postgres-log"]),
    help="Kind of the input files (default: detected from each file's content).")
@click.option("--builtin", is_flag=True, help="Also run the built-in pack.")
@click.option("--flush", is_flag=True,
              help="At the end, close every window: absences still waiting fire (the data may simply end early).")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as a JSON list.")
@click.pass_obj
def test_rules(s: Settings, rule_paths: tuple[Path, ...], files: tuple[Path, ...], kind: str | None,
               builtin: bool, flush: bool, as_json: bool) -> None:
    """Run RULE_PATHS (and/or the built-in pack with --builtin) over source files offline (no
    broker, no store) and print the alerts.

    The files are read by the sources' own normalizers (CloudTrail, Okta, GitHub audit log and
    webhooks, Kubernetes audit, Terraform plans, Debezium, PostgreSQL logs), chained like the
    worker chains them, and evaluated in event-time order. Exit code 1 if a rule is bad or a
    record could not be read (both reported on stderr).
    """
    from pipeline.rules.engine import Engine
    from pipeline.rules.offline import evaluate, read_events

    if not rule_paths and not builtin:
        raise click.UsageError("give rule files or directories (RULE_PATHS), or --builtin for the built-in pack")
    rs = _load(rule_paths, builtin)
    for p in rs.problems:
        err.print(f"[red]bad rule[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    _offline_hasher(s)
    events, rejected = read_events(list(files), kind=kind, scope=s.scope)
    for r in rejected:
        err.print(f"[red]not read[/] {escape(r.origin)}: {escape(r.reason)}", highlight=False, soft_wrap=True)
    alerts = evaluate(Engine(rs), events, flush=flush)
    _print_alerts(alerts, as_json)
    err.print(f"{len(events)} events, {len(rs)} rules, {len(alerts)} alerts", highlight=False, soft_wrap=True)
    if rs.problems or rejected:
        raise SystemExit(1)


@rules.command()
@click.argument("rule_paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--since", required=True, help="Start of the history to search (RFC 3339, '2026-11-27 02:14', 30d, 6h ...).")
@click.option("--until", help="End of the history (default: now).")
@click.option("--limit", type=click.IntRange(1, 10_000_000),
              help="Most stored events to read (default and ceiling: CAUSELOG_QUERY_MAX_ROWS).")
@click.option("--builtin", is_flag=True, help="Also run the built-in pack.")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as a JSON list.")
@click.pass_obj
def hunt(s: Settings, rule_paths: tuple[Path, ...], since: str, until: str | None, limit: int | None, builtin: bool,
         as_json: bool) -> None:
    """Run RULE_PATHS over stored history (the events table) and print what they would have raised.

    Events are read in time order with the chain id the worker stored; nothing is written.
    """
    from datetime import UTC, datetime

    from pipeline.cli.progress import CountingEngine, bar
    from pipeline.cli.timeparse import parse_time
    from pipeline.rules.engine import Engine
    from pipeline.rules.offline import HUNT_SQL, evaluate_items, hunt_items

    now = datetime.now(UTC)
    # The worker refuses a limit above its CAUSELOG_QUERY_MAX_ROWS: never ask for more by default.
    limit = limit or s.query_max_rows
    # One row more than kept in the SQL's LIMIT, so that a cut answer says so (`truncated`).
    params = {"since": parse_time(since, now).isoformat(), "until": (parse_time(until, now) if until else now).isoformat(),
              "limit": limit + 1}
    rs = _load(rule_paths, builtin)
    for p in rs.problems:
        err.print(f"[red]bad rule[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    sql = HUNT_SQL.format(database=s.database)
    with bar("rules hunt: reading stored events", quiet=as_json) as reading:
        reading.add_task("read", total=None)
        if s.clickhouse_url:
            from pipeline.store import open_store

            store = open_store(s, create=False)
            try:
                result = store.readonly(sql, params, limit=limit)
                rows, truncated = result.rows, result.truncated
            finally:
                store.close()
        else:
            from pipeline.cli import api

            answer = api.call(s, "/v1/sql", {"sql": sql, "params": params, "limit": limit})
            rows, truncated = answer["rows"], bool(answer.get("truncated"))
    if truncated:
        err.print(f"[yellow]read only the first {len(rows):,} stored events of the window[/] (--limit, at most "
                  "CAUSELOG_QUERY_MAX_ROWS): narrow --since/--until to hunt over the rest", highlight=False, soft_wrap=True)
    with bar("rules hunt: evaluating", quiet=as_json) as progress:
        task = progress.add_task("hunt", total=len(rows))
        alerts = evaluate_items(CountingEngine(Engine(rs), progress, task), hunt_items(rows))
    _print_alerts(alerts, as_json)
    err.print(f"{len(rows)} stored events, {len(rs)} rules, {len(alerts)} alerts", highlight=False, soft_wrap=True)
    if rs.problems:
        raise SystemExit(1)


@rules.command("run")
@click.option("--once", is_flag=True, help="Stop at the end of <prefix>.chains as of the start (a backfill).")
@click.option("--metrics", "metrics_address", metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (rules evaluated, alerts, notifications).")
@click.option("--sink-wait", default=120.0, show_default=True, type=click.FloatRange(0),
              help="With --once: seconds to wait at the end for the alert sink to store and notify what was raised "
                   "(what is left is done by the next run).")
@click.pass_obj
def run(s: Settings, once: bool, metrics_address: str | None, sink_wait: float) -> None:
    """Run the rules over <prefix>.chains: alerts to <prefix>.alerts exactly once, then to the alerts
    table and the receivers of notify.yaml at least once.

    Rules: the built-in pack and every directory of CAUSELOG_RULES (bad rules are reported and
    skipped). State (correlation windows, pending absences, source statistics) is committed with
    the consumer offsets in one Kafka transaction, so a restart neither loses nor repeats an alert.
    The alert sink (threads of this process, consumer groups of their own on <prefix>.alerts)
    stores each alert in the alerts table and notifies each receiver, committing only what is done,
    so a kill loses nothing: it is stored or sent again after the restart. Stop with Ctrl-C or SIGTERM.
    """
    import signal
    import threading

    from pipeline.bus import ensure_topics
    from pipeline.errors import CauselogError
    from pipeline.rules.engine import Engine
    from pipeline.rules.loader import load, rule_dirs
    from pipeline.rules.notify import load_notify
    from pipeline.stream.alert_sink import AlertSink, sink_groups
    from pipeline.stream.rules_runner import RunReport, run_rules

    rs = load(rule_dirs(s.rules))
    for p in rs.problems:
        err.print(f"[red]bad rule[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    live = RunReport()
    metrics = _serve_metrics(metrics_address, lambda: (live.records - live.rejected) * len(rs))
    ensure_topics(s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tables = _Tables(s)
    sink = AlertSink(s, load_notify(s.notify_path), store_alerts=tables.alerts, store_deliveries=tables.deliveries,
                     say=lambda line: err.print(f"[red]{escape(line)}[/]", highlight=False, soft_wrap=True),
                     fatal=lambda _: stop.set(), on_delivery=lambda d: _delivered(metrics, d),
                     on_stored=(lambda a: metrics.stored(len(a))) if metrics else None,
                     on_store_failed=(lambda n: metrics.stored(n, "failed")) if metrics else None)
    if metrics is not None:
        metrics.in_flight = sink.in_flight

    def ready(report: RunReport) -> None:
        # `causelog up` waits for this line (pipeline.cli.stack.RULES_READY).
        err.print(f"rules runner ready: {len(rs)} rules over {s.topic_chains} (state restored for "
                  f"{len(report.restored)} partitions)", highlight=False, soft_wrap=True)

    sink.start()
    err.print(f"alert sink: {s.topic_alerts} -> alerts table and {len(sink.config.receivers)} receivers "
              f"(consumer groups {', '.join(sink_groups(s, sink.config).values())})", highlight=False, soft_wrap=True)
    try:
        report = run_rules(s, Engine(rs), once=once, stop=stop, report=live, on_ready=ready,
                           on_alerts=metrics.alerted if metrics is not None else None)
        if once and sink.failure is None:
            for what, n in sink.drain(sink_wait).items():
                err.print(f"[red]alert sink: {n} records of {s.topic_alerts} not finished by {what}[/] (the next "
                          f"`rules run` does them)", highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        return
    finally:
        sink.close()
        tables.close()
    if sink.failure is not None:
        raise CauselogError(sink.failure)
    err.print(f"rules: {report.records:,} records, {report.alerts:,} alerts, {report.rejected} rejected to the DLQ, "
              f"{report.commits} transactions", highlight=False, soft_wrap=True)


def _serve_metrics(address: str | None, evaluated: Callable[[], int]) -> RulesMetrics | None:
    """With ``--metrics``: the runner's metrics, served from a background thread."""
    if address is None:
        return None
    from pipeline.metrics import RulesMetrics, new_registry, serve_metrics

    metrics = RulesMetrics(evaluated)
    registry = new_registry("rules")
    registry.register(metrics)
    host, port = serve_metrics(registry, address)
    err.print(f"rules: metrics on http://{host}:{port}/metrics", highlight=False, soft_wrap=True)
    return metrics


def _delivered(metrics: RulesMetrics | None, d: Any) -> None:
    """A notification's final outcome: counted, and said when it failed."""
    if metrics is not None:
        metrics.delivered(d)
    if d.status == "failed":
        err.print(f"[red]notification failed[/] alert {d.alert_id} -> {escape(d.receiver)} after {d.attempts} "
                  f"attempts: {escape(d.error)}", highlight=False, soft_wrap=True)


class _Tables:
    """The alert sink's writes to ``alerts`` and ``alert_deliveries``: directly with CLICKHOUSE_URL
    (one connection, kept), else through the worker that owns the embedded store (``POST
    /v1/alerts``, ``/v1/alerts/deliveries``). Both are idempotent by alert id (deliveries: a repeat
    is a second row of the same outcome); a failure raises (the sink retries and says it)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self._store: Any = None
        self._lock = threading.Lock()

    def alerts(self, rows: list) -> None:  # type: ignore[type-arg]
        """Store alerts in the ``alerts`` table."""
        self._write("/v1/alerts", rows)

    def deliveries(self, rows: list) -> None:  # type: ignore[type-arg]
        """Store notification outcomes in ``alert_deliveries``."""
        self._write("/v1/alerts/deliveries", rows)

    def _write(self, path: str, rows: list) -> None:  # type: ignore[type-arg]
        if not rows:
            return
        if not self.s.clickhouse_url:
            from pipeline.cli import api

            api.call(self.s, path, msgspec.to_builtins(rows))
            return
        from pipeline.errors import CauselogError
        from pipeline.store import open_store
        from pipeline.store.alerts import insert_alerts, insert_deliveries

        with self._lock:  # one client, two sink threads
            try:
                if self._store is None:
                    self._store = open_store(self.s, create=False)
                (insert_alerts if path == "/v1/alerts" else insert_deliveries)(self._store, rows)
            except CauselogError:
                self._close()
                raise

    def _close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            with contextlib.suppress(Exception):
                store.close()

    def close(self) -> None:
        """Close the store connection, if one was opened."""
        with self._lock:
            self._close()


@click.command()
@click.option("--since", help="Only alerts at or after this time (RFC 3339, '2026-11-27 02:14', 02:14, 30m, 6h, 2d).")
@click.option("--rule", "rule_id", help="Only alerts of this rule (its Sigma id).")
@click.option("--level", type=click.Choice(["informational", "low", "medium", "high", "critical"]),
              help="Only alerts of this level or above.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000), help="Most alerts to list.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of alert objects.")
@click.pass_obj
def alerts(s: Settings, since: str | None, rule_id: str | None, level: str | None, limit: int, as_json: bool) -> None:
    """List stored alerts, newest first (from the alerts table, through the worker API when the store is embedded)."""
    from datetime import UTC, datetime

    from pipeline.cli.timeparse import parse_time

    t_since = parse_time(since, datetime.now(UTC)) if since else None
    if s.clickhouse_url:
        from pipeline.store import open_store
        from pipeline.store.alerts import list_alerts

        store = open_store(s, create=False)
        try:
            rows = list_alerts(store, since=t_since, rule=rule_id, level=level, limit=limit)
        finally:
            store.close()
    else:
        from pipeline.cli import api

        query = {"since": t_since.isoformat() if t_since else None, "rule": rule_id, "level": level, "limit": limit}
        rows = api.call(s, "/v1/alerts", query=query)
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    for a in rows:
        out.print(f"{a['time']} [bold]{escape(a['level'])}[/] {escape(a['rule_id'])} {escape(a['summary'])} "
                  f"[dim]{escape(a['id'])}[/]", highlight=False, soft_wrap=True)
