"""The ``causelog`` command line."""

from __future__ import annotations

import logging
import signal
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline import settings as settings_mod
from pipeline.cli import api, stack
from pipeline.cli.timeparse import parse_time
from pipeline.errors import CauselogError, DecodeError
from pipeline.settings import Settings
from pipeline.stream.jsonio import dumps, iso

# Messages stay one line each when stderr is a pipe or a log (rich would wrap them at 80 columns).
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())
# clickhouse-connect logs its own "Unexpected Http Driver Exception" before raising what the CLI
# reports in one line; with no handler configured, Python would print it on stderr too. (In the
# worker the records still propagate to the handlers Faust installs.)
logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())
# Piped output keeps whole values (rich would squeeze tables to 80 columns).
out = Console(width=None if sys.stdout.isatty() else 400)


class _Group(click.Group):
    """Turns every causelog error into one clear line and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CauselogError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="causelog")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """causelog: every production change, who made it, and what it caused.

    Settings come from CAUSELOG_* environment variables (see README, "Settings").
    """
    ctx.obj = settings_mod.load()


# ---------------------------------------------------------------------------------------- stack


@cli.command()
@click.option("--detach", "-d", is_flag=True, help="Start in the background and return.")
@click.pass_obj
def up(s: Settings, detach: bool) -> None:
    """Start the local stack: Kafka broker (unless KAFKA_BOOTSTRAP is set) and the worker.

    The worker owns the embedded chDB store under CAUSELOG_HOME and serves the query API on
    CAUSELOG_API. Without --detach it runs until Ctrl-C, then stops everything it started.
    """
    from pipeline.bus import ensure_topics, wait_for_broker

    _first_admin_token(s)
    t0 = time.monotonic()
    if s.kafka_external:
        err.print(f"using the Kafka cluster at {s.kafka_bootstrap} (KAFKA_BOOTSTRAP)")
    else:
        stack.kafka(s, "start")
    brokers = wait_for_broker(s)
    created = ensure_topics(s)
    if created:
        err.print(f"created topics: {', '.join(created)}")
    pid = stack.start_worker(s)
    rules_pid = stack.start_rules(s)
    err.print(
        f"[green]causelog is up[/] in {time.monotonic() - t0:.1f}s: {brokers} broker(s) at {s.kafka_bootstrap}, "
        f"worker pid {pid}, API {s.api_url}, store {'chdb:' + str(s.chdb_path) if s.embedded else 'ClickHouse server'}, "
        f"rules runner pid {rules_pid}"
    )
    if detach:
        err.print(f"worker log: {stack.worker_log(s)}, rules log: {stack.rules_log(s)}; stop with `causelog down`")
        return
    err.print("running; press Ctrl-C to stop")
    try:
        signal.signal(signal.SIGTERM, _interrupt)
        rules_up = True
        while stack.worker_pid(s) is not None:
            if rules_up and stack.rules_pid(s) is None:
                rules_up = False  # said once; `causelog status` keeps saying it
                err.print(f"[red]the rules runner stopped[/]:\n{stack.tail(stack.rules_log(s))}")
            time.sleep(1)
        err.print(f"[red]the worker stopped[/]:\n{stack.tail(stack.worker_log(s))}")
    except KeyboardInterrupt:
        pass
    finally:
        _down(s)


def _first_admin_token(s: Settings) -> None:
    """On first start, create the admin token the local CLI uses (see `causelog token`)."""
    from pipeline import tokens

    if tokens.ensure_admin(s.tokens_path, s.admin_token_path):
        err.print(f"created the admin API token in {s.admin_token_path} (mode 0600; the CLI sends it); "
                  f"token hashes are kept in {s.tokens_path}", highlight=False)


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM stops `causelog up` the way Ctrl-C does: through the cleanup in its finally.
    raise KeyboardInterrupt


def _down(s: Settings) -> None:
    if stack.stop_rules(s):
        err.print("rules runner stopped")
    if stack.stop_worker(s):
        err.print("worker stopped")
    if not s.kafka_external:
        stack.kafka(s, "stop", check=False)


@cli.command()
@click.pass_obj
def down(s: Settings) -> None:
    """Stop the rules runner, the worker and the local broker started by `causelog up` (data is kept)."""
    _down(s)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(s: Settings, as_json: bool) -> None:
    """Show broker, worker, rules runner, consumer lag and stored row counts. Exit 1 if anything is down.

    The worker counts as down when its /health says ingestion is not running (the reasons are
    shown); per partition, the lag and the age of the oldest unconsumed record are shown, and a
    partition with lag whose committed offset has not advanced for CAUSELOG_STALL_SECONDS is
    flagged as stalled (also exit 1).
    """
    from pipeline.bus import consumer_lag, wait_for_broker

    report: dict[str, Any] = {"kafka": s.kafka_bootstrap, "api": s.api_url}
    try:
        report["brokers"] = wait_for_broker(s, timeout=5)
    except CauselogError as exc:
        report["brokers"] = 0
        report["broker_error"] = str(exc)
    health = api.health(s)
    report["worker"] = health
    # Another deployment's worker on CAUSELOG_API is not this one's: its rows and health say nothing here.
    if health is not None and health.get("group") not in (None, s.group):
        report["worker_error"] = (f"the worker answering on {s.api_url} is of group {health.get('group')} "
                                  f"(store {health.get('store')}), not {s.group}: check CAUSELOG_API")
        health = None
    healthy = bool(health and health.get("ok"))
    if report["brokers"]:
        try:
            lag = consumer_lag(s)
            report["lag"] = sum(p["lag"] for p in lag.values())
            report["partitions"] = _partition_report(s, lag, health)
        except CauselogError as exc:
            report["lag_error"] = str(exc)
    if health:
        try:
            stats = api.call(s, "/v1/stats")
            report["tables"] = stats.get("tables")
            report["counters"] = stats.get("worker")
            report["correlation"] = stats.get("correlation")
        except CauselogError as exc:
            report["stats_error"] = str(exc)
    report["rules"] = _rules_status(s, bool(report["brokers"]))
    stalled = sorted(p for p, v in (report.get("partitions") or {}).items() if v.get("stalled"))
    rules_ok = report["rules"] is None or report["rules"]["up"]
    ok = bool(report["brokers"]) and healthy and not stalled and rules_ok
    if as_json:
        click.echo(dumps(report))
    else:
        _print_status(s, report, health, stalled)
    sys.exit(0 if ok else 1)


def _partition_report(s: Settings, lag: dict[int, dict[str, int]], health: dict[str, Any] | None) -> dict[int, Any]:
    """Per partition: offsets, lag, age of the oldest unconsumed record, stalled or not."""
    from pipeline.bus.kafka import oldest_unconsumed

    now = time.time()
    try:
        oldest = oldest_unconsumed(s, lag)
    except CauselogError:
        oldest = {}
    committed_at = {int(p): t for p, t in ((health or {}).get("committed_at") or {}).items()}
    out: dict[int, Any] = {}
    for p, v in sorted(lag.items()):
        row: dict[str, Any] = dict(v)
        age = now - oldest[p] if p in oldest else None
        row["oldest_unconsumed_age_s"] = None if age is None else round(max(0.0, age), 1)
        since_commit = now - committed_at[p] if p in committed_at else None
        # Stalled: records wait longer than the limit and nothing was committed for as long.
        row["stalled"] = bool(v["lag"] > 0 and age is not None and age > s.stall_seconds
                              and (since_commit is None or since_commit > s.stall_seconds))
        out[p] = row
    return out


def _print_status(s: Settings, report: dict[str, Any], health: dict[str, Any] | None, stalled: list[int]) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("broker", f"[green]up[/] ({report['brokers']} at {s.kafka_bootstrap})" if report["brokers"]
                  else f"[red]down[/] ({escape(str(report.get('broker_error')))})")
    if report.get("worker_error"):
        table.add_row("worker", f"[red]not this deployment's[/] ({escape(report['worker_error'])})")
    elif health is None:
        table.add_row("worker", f"[red]down[/] (no answer on {s.api_url})")
    elif health.get("ok"):
        table.add_row("worker", f"[green]up[/] (pid {health.get('pid')}, {s.api_url})")
    else:
        problems = "; ".join(str(p) for p in health.get("problems") or [])
        table.add_row("worker", f"[red]not ingesting[/] (pid {health.get('pid')}): {escape(problems)}")
    table.add_row("lag", str(report.get("lag", report.get("lag_error", "-"))))
    if report.get("rules") is not None:
        table.add_row("rules", _rules_line(s, report["rules"]))
    for p, v in (report.get("partitions") or {}).items():
        if not v["lag"]:
            continue
        age = v["oldest_unconsumed_age_s"]
        flag = f" [red]STALLED (no progress for over {s.stall_seconds:.0f}s)[/]" if v["stalled"] else ""
        table.add_row(f"  partition {p}", f"lag {v['lag']:,}, oldest unconsumed "
                      f"{'-' if age is None else f'{age:.0f}s'} old{flag}")
    if report.get("tables"):
        table.add_row("rows", ", ".join(f"{k} {v:,}" for k, v in report["tables"].items()))
    if report.get("counters"):
        c = report["counters"]
        table.add_row("worker totals", f"records {c['records']:,}, stored {c['stored']:,}, "
                      f"duplicates {c['duplicates']:,}, rejected {c['rejected']:,}")
    if report.get("correlation"):
        parts = report["correlation"]
        table.add_row("correlation", f"{len(parts)} partitions, {sum(p['live_keys'] for p in parts):,} live keys, "
                      f"{sum(p['chains'] for p in parts):,} live chains")
    out.print(table)


def _rules_status(s: Settings, broker: bool) -> dict[str, Any] | None:
    """The rules runner `causelog up` started: pid, up, and its lag on <prefix>.chains; None if
    `causelog up` started none (a runner of a deployment elsewhere is not this machine's to see)."""
    from dataclasses import replace

    from pipeline.bus import consumer_lag

    if not stack.rules_started(s):
        return None
    pid = stack.rules_pid(s)
    out: dict[str, Any] = {"up": pid is not None, "pid": pid, "log": str(stack.rules_log(s))}
    if broker:
        try:
            lag = consumer_lag(replace(s, group=f"{s.group}-rules"), s.topic_chains)
            out["lag"] = sum(p["lag"] for p in lag.values())
        except CauselogError as exc:
            out["lag_error"] = str(exc)
        from pipeline.rules.notify import load_notify
        from pipeline.stream.alert_sink import sink_lag

        try:  # the alert sink's groups on <prefix>.alerts: the table (`store`) and each receiver
            out["sink_lag"] = sink_lag(s, load_notify(s.notify_path))
        except CauselogError as exc:
            out["sink_lag_error"] = str(exc)
    return out


def _rules_line(s: Settings, r: dict[str, Any]) -> str:
    lag = r.get("lag", r.get("lag_error", "-"))
    sink = r.get("sink_lag")
    sink_text = (", alert sink lag " + ", ".join(f"{k} {v}" for k, v in sink.items()) + f" on {s.topic_alerts}"
                 if sink else "")
    if r["up"]:
        return f"[green]up[/] (pid {r['pid']}, lag {lag} on {s.topic_chains}{sink_text})"
    return f"[red]down[/] (the runner `causelog up` started has exited; see {r['log']})"


@cli.command(hidden=False)
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
              help="Worker log level.")
@click.pass_obj
def worker(s: Settings, loglevel: str) -> None:
    """Run one worker in the foreground (what `causelog up` starts; run N for scale-out)."""
    from pipeline.stream.app import run_worker

    _first_admin_token(s)
    run_worker(s, loglevel=loglevel)


# -------------------------------------------------------------------------------------- produce


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, 1):
        line = line.strip()
        if line:
            yield number, line


@cli.command()
@click.argument("file", type=click.Path(exists=True, allow_dash=True, dir_okay=False, path_type=Path))
@click.option("--topic", default=None, help="Topic to send to (default <prefix>.changes).")
@click.option("--wait", "wait_secs", type=float, default=None, metavar="SECONDS",
              help="Then wait (up to SECONDS) until the workers have stored everything on the topic.")
@click.pass_obj
def produce(s: Settings, file: Path, topic: str | None, wait_secs: float | None) -> None:
    """Send JSON-lines envelopes from FILE (or - for stdin) to Kafka, validating each line.

    A bad line is reported with its line number and not sent; the exit code is 1 if any was bad.
    """
    from pipeline.bus import DeliveryTracker, make_producer, wait_for_broker
    from pipeline.integrity.sourcesig import source_signer
    from pipeline.model import decode, encode, with_observed_time

    topic = topic or s.topic_changes
    # A producer retries an unreachable broker for minutes: fail fast, in one line, instead.
    wait_for_broker(s, timeout=15.0)
    tracker = DeliveryTracker(make_producer(s))
    sign = source_signer(s.source_signing_key)
    now = datetime.now(UTC)
    bad = 0
    stdin = str(file) == "-"
    stream = sys.stdin.buffer if stdin else file.open("rb")
    total = None if stdin else file.stat().st_size
    progress = Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err, disable=stdin or not err.is_terminal, transient=True)
    with progress, stream:
        task = progress.add_task("produce", total=total)
        for number, line in _lines(stream):
            progress.update(task, completed=stream.tell() if not stdin else None)
            try:
                event = with_observed_time(decode(line, max_bytes=s.max_event_bytes), now)
            except DecodeError as exc:
                bad += 1
                err.print(f"{file}:{number}: {exc.message}", highlight=False, markup=False)
                continue
            tracker.produce(topic, encode(sign(event) if sign else event), key=event.scope.encode())
            tracker.producer.poll(0)
        sent = tracker.flush()
    err.print(f"sent {sent:,} events to {topic}" + (f"; [red]{bad} bad line(s) not sent[/]" if bad else ""))
    if wait_secs is not None:
        _wait_for_lag(s, topic, wait_secs)
    sys.exit(1 if bad else 0)


def _wait_for_lag(s: Settings, topic: str, timeout: float) -> None:
    """Block until the worker group committed every record of ``topic`` (so it is stored)."""
    from pipeline.bus import consumer_lag

    deadline = time.monotonic() + timeout
    lag = -1
    with err.status("waiting for the worker to store them"):
        while time.monotonic() < deadline:
            lag = sum(p["lag"] for p in consumer_lag(s, topic).values())
            if lag == 0:
                err.print("stored")
                return
            time.sleep(0.5)
    raise CauselogError(f"the worker still has {lag} records to store on {topic} after {timeout:.0f}s "
                        "(is it running? see `causelog status`)")


# -------------------------------------------------------------------------------------- queries


def _run_sql(s: Settings, sql: str, params: dict[str, Any], limit: int) -> dict[str, Any]:
    if s.embedded:
        return api.call(s, "/v1/sql", {"sql": sql, "params": params, "limit": limit},
                        timeout=s.query_timeout + 30)
    from pipeline.store import open_store

    store = open_store(s, create=False)
    try:
        result = store.readonly(sql, params, limit=limit)
    finally:
        store.close()
    return {"columns": result.columns, "rows": result.rows, "truncated": result.truncated}


def _print_rows(result: dict[str, Any], as_json: bool) -> None:
    columns, rows = result["columns"], result["rows"]
    more = " (more rows exist: raise --limit or narrow the query)" if result.get("truncated") else ""
    if as_json:
        click.echo(dumps([dict(zip(columns, row, strict=True)) for row in rows]))
        if more:
            err.print(f"{len(rows)} row(s){more}")
        return
    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*(escape(_cell(v)) for v in row))
    out.print(table)
    err.print(f"{len(rows)} row(s){more}")


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


@cli.command()
@click.argument("query")
@click.option("--param", "-p", multiple=True, metavar="NAME=VALUE", help="Query parameter for {NAME:Type}.")
@click.option("--limit", type=click.IntRange(min=1),
              help="Most rows returned  [default: 10000, at most CAUSELOG_QUERY_MAX_ROWS].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects.")
@click.pass_obj
def sql(s: Settings, query: str, param: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """Run a read-only ClickHouse SQL QUERY against the store.

    One SELECT, WITH, SHOW, DESCRIBE or EXPLAIN statement; ClickHouse runs it with readonly=1
    (no writes, no settings changes, no table functions such as file() or url()) and stops it at
    CAUSELOG_QUERY_TIMEOUT seconds, CAUSELOG_QUERY_MAX_ROWS_READ rows read or
    CAUSELOG_QUERY_MAX_MEMORY bytes. It runs in database CAUSELOG_DATABASE (default `causelog`),
    so `SELECT count() FROM events` works; tables: events, event_links, chain_edges, ...
    """
    params = {}
    for p in param:
        name, sep, value = p.partition("=")
        if not sep:
            raise click.BadParameter(f"{p!r} must look like NAME=VALUE", param_hint="--param")
        params[name] = value
    _print_rows(_run_sql(s, query, params, _limit(s, limit, 10000)), as_json)


def _events_query(s: Settings, path: str, params: dict[str, Any], local: Any) -> dict[str, Any]:
    """Run a named events query: through the worker API (embedded store) or on the server."""
    if s.embedded:
        query = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in params.items()}
        return api.call(s, path, query=query)
    from pipeline.store import open_store

    store = open_store(s, create=False)
    try:
        r = local(store)
    finally:
        store.close()
    return {"columns": r.columns, "rows": r.rows}


def _print_events(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_rows(result, True)
        return
    table = Table("time (UTC)", "type", "target", "actor", "outcome", "links")
    for row in (dict(zip(result["columns"], r, strict=True)) for r in result["rows"]):
        outcome = row["outcome"]
        style = {"failure": "red", "success": "green"}.get(outcome, "")
        table.add_row(str(row["time"]).replace("T", " ").rstrip("Z"), escape(row["type"]),
                      escape(f"{row['target_kind']}:{row['target_id']}"),
                      escape(f"{row['actor_id']} ({row['actor_assurance']})"
                             + (f" — {row['via']}" if row.get("via") else "")),
                      f"[{style}]{outcome}[/]" if style else escape(outcome), escape("\n".join(row["links"])))
    out.print(table)
    err.print(f"{len(result['rows'])} event(s)")


_EVIDENCE = click.option("--evidence", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Also write an evidence pack of the events shown into this folder (see `evidence`).")


def _evidence(s: Settings, ids: list[str], directory: Path) -> None:
    """Write the evidence pack of the events a query showed, recording the command line."""
    from pipeline.cli.integrity import make_pack

    if not ids:
        raise CauselogError("no events to put in an evidence pack")
    make_pack(s, list(dict.fromkeys(ids)), directory, "causelog " + " ".join(sys.argv[1:]))


_SINCE = click.option("--since", help="Start: RFC 3339, '2026-11-27 02:14', 02:14 (today UTC) or 6h (ago).")
_UNTIL = click.option("--until", help="End, same forms as --since.")
_LIMIT = click.option("--limit", type=click.IntRange(min=1),
                      help="Most events listed  [default: 1000, at most CAUSELOG_QUERY_MAX_ROWS].")


def _limit(s: Settings, asked: int | None, default: int) -> int:
    """The --limit to send: the one asked for, else the default within CAUSELOG_QUERY_MAX_ROWS
    (the API refuses a limit above it, so a lowered cap must not break the default)."""
    return asked if asked is not None else min(default, s.query_max_rows)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")


@cli.command()
@_SINCE
@_UNTIL
@click.option("--target", help="Only events of this target: id, name, service, last segment of an ARN or "
              "kind/name id, or kind:name.")
@_LIMIT
@_JSON
@click.pass_obj
def timeline(s: Settings, since: str | None, until: str | None, target: str | None, limit: int | None,
             as_json: bool) -> None:
    """List stored events in time order."""
    from pipeline.store import queries

    now = datetime.now(UTC)
    t_since = parse_time(since, now) if since else None
    t_until = parse_time(until, now) if until else None
    limit = _limit(s, limit, 1000)
    params = {"since": t_since, "until": t_until, "target": target, "limit": limit}
    result = _events_query(s, "/v1/timeline", params, lambda st: queries.timeline(
        st, since=t_since, until=t_until, target=target, limit=limit))
    _print_events(result, as_json)
    if target:
        from pipeline.correlate.targets import grouped, matches

        rows = [dict(zip(result["columns"], r, strict=True)) for r in result["rows"]]
        found = matches(target, rows)
        if len(found) > 1:  # several different targets answer to the name: say which and how
            for how, items in grouped(found).items():
                err.print(f"{escape(target)} matched by {escape(how)}: "
                          + escape(", ".join(f"{m.kind}:{m.id} ({m.events} events)" for m in items)))


def _link_command(key_type: str, what: str) -> None:
    @cli.command(key_type, help=f"List the events of one {what}, in time order.\n\n"
                 f"ID is the id after `{key_type}:` in the events' links; a suffix of it is enough.")
    @click.argument("ident", metavar="ID")
    @_LIMIT
    @_JSON
    @click.pass_obj
    def command(s: Settings, ident: str, limit: int | None, as_json: bool) -> None:
        from pipeline.store import queries

        limit = _limit(s, limit, 1000)
        result = _events_query(s, f"/v1/linked/{key_type}/{urllib.parse.quote(ident, safe='')}", {"limit": limit},
                               lambda st: queries.linked(st, key_type, ident, limit=limit))
        _print_events(result, as_json)


_link_command("session", "session (database, cloud, identity provider)")
_link_command("trace", "distributed trace (W3C trace id)")


@cli.command()
@click.argument("actor")
@_SINCE
@_UNTIL
@_LIMIT
@_JSON
@click.pass_obj
def who(s: Settings, actor: str, since: str | None, until: str | None, limit: int | None, as_json: bool) -> None:
    """List what ACTOR did (actor id, principal or display name), in time order.

    ACTOR may also be a person of the identity map (CAUSELOG_IDENTITIES plus joins learned from
    the data) or any principal of one: then the events of all that person's principals are listed,
    and the events done with the credentials of sessions they opened (an assumed role's calls, a
    database session's statements), each with `via` saying who opened the session.
    """
    from pipeline.store import queries
    from pipeline.store.identities import identity_map

    now = datetime.now(UTC)
    t_since = parse_time(since, now) if since else None
    t_until = parse_time(until, now) if until else None
    limit = _limit(s, limit, 1000)
    params = {"actor": actor, "since": t_since, "until": t_until, "limit": limit}
    _print_events(_events_query(s, "/v1/who", params, lambda st: queries.who(
        st, actor, since=t_since, until=t_until, limit=limit, identities=identity_map(st, s.identities_path))),
        as_json)


@cli.command()
@click.argument("target")
@click.option("--at", "at_text", required=True, help="Incident time: RFC 3339, '2026-11-27 02:14', 02:14 or 6h (ago).")
@click.option("--window", default="6h", show_default=True, help="How far back to look (30m, 6h, 2d).")
@click.option("--limit", default=20, show_default=True, help="Most causes listed.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write the answer as one self-contained HTML report to this file.")
@_JSON
@_EVIDENCE
@click.pass_obj
def why(s: Settings, target: str, at_text: str, window: str, limit: int, html_file: Path | None,
        as_json: bool, evidence: Path | None = None) -> None:
    """What changed to TARGET and what it depends on before an incident, ranked, with each change's chain.

    TARGET is a target id, name or service, the last segment of an ARN or `kind/name` id, or
    `kind:name`; when it names several targets the answer lists them and how each matched.
    Dependencies come from CAUSELOG_TOPOLOGY (default $CAUSELOG_HOME/topology.yaml): see
    README, "why". Ranking: configuration, deploys, schema, access, data writes, then reads;
    repeated events are one line with a count; failed changes move up; the failure itself is
    shown as the symptom.
    """
    from pipeline.cli.timeparse import parse_duration

    at = parse_time(at_text, datetime.now(UTC))
    span = parse_duration(window)
    if s.embedded:
        result = api.call(s, "/v1/why", query={"target": target, "at": at.isoformat(),
                                               "window": span.total_seconds(), "limit": limit})
    else:
        from pipeline.correlate.topology import load_topology
        from pipeline.store import open_store, queries
        from pipeline.store.identities import identity_map

        store = open_store(s, create=False)
        try:
            result = queries.why(store, target, at=at, window=span, topology=load_topology(s.topology_path),
                                 limit=limit, identities=identity_map(store, s.identities_path))
        finally:
            store.close()
    if evidence is not None:
        _evidence(s, [e["id"] for c in result["causes"] for e in [c["event"], *c["chain"]]], evidence)
    if html_file is not None:
        from pipeline.cli.report import write_report
        from pipeline.report import why_html

        write_report(html_file, why_html(result, generated_at=datetime.now(UTC)))
    if as_json:
        click.echo(dumps(result))
        return
    _print_why(result)


def _who(e: dict[str, Any]) -> str:
    """``actor (assurance)``, followed by the person behind it when the identity map knows one;
    for an event made with a session's credentials, what was proven when the session was opened:
    ``prod-admin/ops-session (authenticated) — frida (mfa at 01:55 via AssumeRole, AssumeRole)``."""
    text = f"{escape(e['actor_id'])} ({escape(e['actor_assurance'])})"
    person = e.get("person")
    origin = e.get("session_origin")
    if origin:
        who = person["id"] if person else origin["actor"]
        return text + f" — [cyan]{escape(who)}[/] ({escape(origin['summary'])})"
    if person:
        text += f" = [cyan]{escape(person['id'])}[/]"
        if person.get("name") and person["name"] != person["id"]:
            text += f" ({escape(person['name'])})"
    return text


def _print_matches(result: dict[str, Any]) -> list[str]:
    """Lines saying which targets the typed name matched, grouped by how."""
    matches = result.get("matches") or []
    if len(matches) <= 1 and all(m["how"] == "target.id" for m in matches):
        return []
    lines = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in matches:
        groups.setdefault(m["how"], []).append(m)
    for how, items in groups.items():
        names = ", ".join(f"{m['kind']}:{m['id']} ({m['events']} events)" for m in items)
        lines.append(f"{escape(result['target'])} matched by {escape(how)}: {escape(names)}")
    if len(matches) > 1:
        lines.append(f"[yellow]{len(matches)} different targets match; give an exact id to narrow it down[/]")
    return lines


def _cause_line(cause: dict[str, Any]) -> str:
    """``type kind:target at T`` (or ``first .. last (×count)`` for a group) ``by who``."""
    e = cause["event"]
    style = "red" if e["outcome"] == "failure" else "bold"
    count = cause.get("count", 1)
    when = (f"{escape(str(cause['first']))} .. {escape(str(cause['last']))} ([bold]×{count}[/])" if count > 1
            else f"at {escape(str(e['time']))}")
    return f"[{style}]{escape(e['type'])}[/] {escape(e['target_kind'])}:{escape(e['target_id'])} {when} by {_who(e)}"


def _print_why(result: dict[str, Any]) -> None:
    from rich.tree import Tree

    head = (f"why [bold]{escape(result['target'])}[/] at {escape(str(result['at']))} "
            f"(looking {result['window_seconds'] / 3600:g}h back at {escape(', '.join(result['related']))}; "
            f"{result.get('candidates', len(result['causes']))} events)")
    tree = Tree(head)
    for line in _print_matches(result):
        tree.add(line)
    for symptom in result.get("symptoms", []):
        tree.add("symptom: " + _cause_line(symptom))
    for n, cause in enumerate(result["causes"], 1):
        e = cause["event"]
        node = tree.add(f"{n}. {_cause_line(cause)} [dim]{escape(cause.get('kind', ''))} score {cause['score']}[/]")
        if e.get("diff"):
            node.add(f"diff: {escape(dumps(e['diff']).decode())}")
        if e.get("statement"):
            node.add(f"statement: {escape(e['statement'])}")
        for key, values in cause["story"].items():
            node.add(f"{key}: {escape(', '.join(map(str, values)))}")
        if len(cause["chain"]) > 1:
            chain = node.add(f"chain ({len(cause['chain'])} events)")
            for c in cause["chain"]:
                line = f"{escape(str(c['time']))} {escape(c['type'])} {_who(c)} {escape(c['outcome'])}"
                if c.get("statement"):
                    line += f" [dim]{escape(c['statement'][:120])}[/]"
                chain.add(line)
    if not result["causes"]:
        tree.add("no changes found in the window")
    out.print(tree)


@cli.command()
@click.argument("event_id", metavar="EVENT_ID")
@_JSON
@_EVIDENCE
@click.pass_obj
def chain(s: Settings, event_id: str, as_json: bool, evidence: Path | None = None) -> None:
    """Show the causal chain of an event: the events linked to it, and who points to whom on which key.

    The chain id is the id of its earliest event (DESIGN.md §3).
    """
    if s.embedded:
        try:
            result = api.call(s, f"/v1/chain/{urllib.parse.quote(event_id, safe='')}")
        except CauselogError as exc:
            if "404" not in str(exc):
                raise
            raise CauselogError(f"no event with id {event_id!r}") from None
    else:
        from pipeline.store import open_store, queries
        from pipeline.store.identities import identity_map

        store = open_store(s, create=False)
        try:
            result = queries.chain(store, event_id, identities=identity_map(store, s.identities_path))
        finally:
            store.close()
        if result["chain_id"] is None:
            raise CauselogError(f"no event with id {event_id!r}")
    if evidence is not None:
        _evidence(s, [e["id"] for e in result["events"]], evidence)
    if as_json:
        click.echo(dumps(result))
        return
    from rich.tree import Tree

    tree = Tree(f"chain [bold]{escape(str(result['chain_id']))}[/] ({len(result['events'])} events)")
    for e in result["events"]:
        node = tree.add(f"{escape(str(e['time']))} [bold]{escape(e['type'])}[/] {escape(e['target_kind'])}:"
                        f"{escape(e['target_id'])} by {_who(e)} {escape(e['outcome'])} [dim]{escape(e['id'])}[/]")
        for edge in (x for x in result["edges"] if x["from"] == e["id"]):
            node.add(f"after {escape(edge['to'])} on {escape(edge['key'])}")
    out.print(tree)


from pipeline.cli.ingest import ingest  # noqa: E402
from pipeline.cli.store import store as store_group  # noqa: E402
from pipeline.cli.tokens import token  # noqa: E402

cli.add_command(ingest)
cli.add_command(token)
cli.add_command(store_group)
from pipeline.cli.integrity import evidence, hold, keys, prune, verify, verify_pack  # noqa: E402

cli.add_command(keys)
cli.add_command(verify)
cli.add_command(evidence)
cli.add_command(verify_pack)
cli.add_command(hold)
cli.add_command(prune)
from pipeline.cli.rules import alerts, rules  # noqa: E402

cli.add_command(rules)
cli.add_command(alerts)
from pipeline.cli.report import report  # noqa: E402

cli.add_command(report)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="causelog")


if __name__ == "__main__":
    main()
