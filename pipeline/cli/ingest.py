"""``causelog ingest <kind>``: run a source connector once (backfill) or following its input."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.cli.options import FOLLOW
from pipeline.errors import CauselogError, DecodeError
from pipeline.integrity.sourcesig import source_signer
from pipeline.metrics import SourceMetrics
from pipeline.model import Event
from pipeline.settings import Settings
from pipeline.sources import files
from pipeline.sources.runner import RawRecord, Report, load_cursor, run_source

err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # one line per message in a log

#: Key of the ``--metrics`` collector in the click context's ``meta`` (shared with subcommands).
METRICS_KEY = "causelog.ingest.metrics"


def parse_json(rec: RawRecord) -> Any:
    """The record's payload as JSON, or a ``bad_json`` DecodeError naming where it came from."""
    try:
        return orjson.loads(rec.payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("bad_json", f"{rec.origin} is not JSON: {exc}") from None


def _run(
    s: Settings,
    kind: str,
    instance: str,
    fetch: Callable[[Any], Iterable[RawRecord]],
    convert: Callable[[RawRecord], list[Event]],
    *,
    total: int | None,
    follow: bool = False,
) -> Report:
    """Run the source until its input ends (or, following, until interrupted); the totals."""
    from pipeline.bus import ensure_topics
    from pipeline.bus.sink import KafkaSink
    from pipeline.hashkey import install

    install(s)
    ensure_topics(s)
    metrics: SourceMetrics | None = click.get_current_context().meta.get(METRICS_KEY)
    if metrics is not None:
        convert = metrics.watch(convert)
    sink = KafkaSink(s, f"{kind}:{instance}")
    if follow and threading.current_thread() is threading.main_thread():
        # SIGTERM ends a follower like Ctrl-C: summary printed, open transaction aborted.
        signal.signal(signal.SIGTERM, _interrupt)
    totals = Report()
    try:
        while True:
            cursor = load_cursor(sink)
            progress = Progress(TextColumn(f"ingest {kind}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                                console=err, disable=not err.is_terminal or follow, transient=True)
            with progress:
                task = progress.add_task(kind, total=total)
                start_offset = (cursor or {}).get("offset", 0) if isinstance(cursor, dict) else 0
                progress.update(task, completed=start_offset)

                def tick(_: Report, rec: RawRecord, progress: Progress = progress, task: Any = task) -> None:
                    if "offset" in rec.cursor:
                        progress.update(task, completed=rec.cursor["offset"])
                    else:
                        progress.update(task, advance=len(rec.original))

                report = run_source(kind, fetch(cursor), convert, sink, topic=s.topic_changes, dlq=s.topic_dlq,
                                    on_progress=tick, sign=source_signer(s.source_signing_key))
            if metrics is not None:
                metrics.add(report)
            for name in ("records", "events", "rejected", "commits"):
                setattr(totals, name, getattr(totals, name) + getattr(report, name))
            for reason, n in report.reasons.items():
                totals.reasons[reason] = totals.reasons.get(reason, 0) + n
            if report.records or not follow:
                _summary(kind, report)
            if not follow:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        _summary(kind, totals)
    finally:
        sink.close()
    if totals.rejected and not follow:
        raise SystemExit(1)
    return totals


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _summary(kind: str, r: Report) -> None:
    why = ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items()))
    err.print(f"{kind}: {r.records:,} records -> {r.events:,} events"
              + (f"; [red]{r.rejected} rejected to the DLQ[/] ({why})" if r.rejected else ""))


@click.group()
@click.option("--metrics", "metrics_address", metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics while the source runs (events sent, "
                   "rejected by reason, freshness per source, cursor commits); for --follow.")
@click.pass_context
def ingest(ctx: click.Context, metrics_address: str | None) -> None:
    """Run a source connector: read its input, send envelopes to Kafka, bad input to the DLQ.

    Each source keeps a cursor in Kafka, committed in the same transaction as its events:
    run it again (or after a crash) and it resumes where it stopped, repeating nothing.
    """
    if metrics_address is not None:
        from pipeline.metrics import new_registry, serve_metrics

        metrics = SourceMetrics(lambda: datetime.now(UTC))
        registry = new_registry("source")
        registry.register(metrics)
        host, port = serve_metrics(registry, metrics_address)
        err.print(f"ingest: metrics on http://{host}:{port}/metrics", highlight=False, soft_wrap=True)
        ctx.meta[METRICS_KEY] = metrics


def _scope(s: Settings, scope: str | None) -> str:
    return scope or s.scope


@ingest.command("github-webhook")
@click.option("--file", "paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Webhook payload file(s) or directories of them (*.json).")
@click.option("--listen", metavar="HOST:PORT", is_flag=False, flag_value="127.0.0.1:8089",
              help="Receive webhooks over HTTP on HOST:PORT (alone: 127.0.0.1:8089) until SIGTERM/Ctrl-C.")
@click.option("--secret-env", metavar="VAR", help="Variable holding the webhook secret (required with --listen).")
@click.option("--event", "event_name", help="X-GitHub-Event name; default: each file's folder name.")
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@FOLLOW
@click.pass_obj
def github_webhook(s: Settings, paths: tuple[Path, ...], listen: str | None, secret_env: str | None,
                   event_name: str | None, scope: str | None, follow: bool) -> None:
    """Receive GitHub webhooks over HTTP (--listen, signed with --secret-env) or import payload files (--file)."""
    from pipeline.sources import github

    if bool(paths) == bool(listen):
        raise click.UsageError("give either --file PATH... or --listen HOST:PORT")
    if listen:
        from pipeline.cli.ingest_listen import serve_github

        serve_github(s, listen, secret_env, scope)
        return

    def convert(rec: RawRecord) -> list[Event]:
        path = Path(rec.origin)
        # The file's mtime stands in for the delivery time of payloads that carry no time of their
        # own; unlike "now" it stays the same when the file is ingested again.
        received = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return github.to_events(parse_json(rec), event_name=event_name or path.parent.name,
                                scope=_scope(s, scope), received_at=received)

    instance = ",".join(sorted(str(p.resolve()) for p in paths))
    _run(s, "github-webhook", instance, lambda c: files.fetch_documents(list(paths), c), convert,
         total=files.total_size(list(paths)), follow=follow)


@ingest.command("k8s-audit")
@click.option("--file", "paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Kubernetes audit log (JSON lines, as the log backend writes it) or a directory of "
                   "them, walked recursively (repeatable).")
@click.option("--listen", metavar="HOST:PORT", is_flag=False, flag_value="127.0.0.1:8090",
              help="Be the API server's audit webhook backend on HOST:PORT (alone: 127.0.0.1:8090).")
@click.option("--cluster", help="Cluster name recorded on the events.")
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@FOLLOW
@click.pass_obj
def k8s_audit(s: Settings, paths: tuple[Path, ...], listen: str | None, cluster: str | None, scope: str | None,
              follow: bool) -> None:
    """Receive audit webhook batches over HTTP (--listen) or import audit log files (--file)."""
    from pipeline.sources import k8s_audit as k8s

    if bool(paths) == (listen is not None):
        raise click.UsageError("give either --file PATH or --listen HOST:PORT")
    if listen is not None:
        if follow:
            raise click.UsageError("--follow applies to --file only")
        from pipeline.cli.ingest_listen import serve_k8s

        serve_k8s(s, listen, scope, cluster)
        return

    def to_events(obj: Any) -> list[Event]:
        out: list[Event] = []
        for item in k8s.split_records(obj):
            out.extend(k8s.to_events(item, scope=_scope(s, scope), cluster=cluster))
        return out

    _run_files(s, "k8s-audit", paths, to_events, follow=follow)


def _run_files(s: Settings, kind: str, paths: tuple[Path, ...], to_events: Callable[[Any], list[Event]],
               *, follow: bool) -> None:
    """Run a line-based source over ``paths``: one file is read line by line, resumed at its byte
    offset and followed through rotation; directories (walked recursively) and several files are
    read file by file (:func:`files.fetch_tree`: JSON lines, or one JSON document per file)."""
    if len(paths) == 1 and paths[0].is_file():
        path = paths[0]
        _run(s, kind, str(path.resolve()), lambda c: files.fetch_lines(path, c),
             lambda rec: to_events(parse_json(rec)), total=path.stat().st_size, follow=follow)
        return

    def convert(rec: RawRecord) -> list[Event]:
        out: list[Event] = []
        for doc in _json_documents(rec):
            for item in doc if isinstance(doc, list) else [doc]:
                out.extend(to_events(item))
        return out

    instance = ",".join(sorted(str(p.resolve()) for p in paths))
    _run(s, kind, instance, lambda c: files.fetch_tree(list(paths), c), convert,
         total=files.total_size(list(paths), files.TREE_SUFFIXES), follow=follow)


@ingest.command("terraform")
@click.argument("plans", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@FOLLOW
@click.pass_obj
def terraform(s: Settings, plans: tuple[Path, ...], scope: str | None, follow: bool) -> None:
    """Import `terraform show -json` plans: one config event per resource change."""
    from pipeline.sources import terraform as tf

    def convert(rec: RawRecord) -> list[Event]:
        path = Path(rec.origin)
        planned = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        name = path.parent.name if path.stem == "plan" else path.stem
        return tf.to_events(parse_json(rec), scope=_scope(s, scope), plan_name=name, planned_at=planned)

    instance = ",".join(sorted(str(p.resolve()) for p in plans))
    _run(s, "terraform", instance, lambda c: files.fetch_documents(list(plans), c), convert,
         total=files.total_size(list(plans)), follow=follow)




def _json_documents(rec: RawRecord) -> list[Any]:
    """A file holding one JSON document, or JSON lines (one document per non-blank line)."""
    try:
        return [orjson.loads(rec.payload)]
    except orjson.JSONDecodeError:
        pass
    docs = []
    for n, line in enumerate(bytes(rec.payload).splitlines(), 1):
        if line.strip():
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise DecodeError("bad_json", f"{rec.origin} is neither a JSON document nor JSON lines "
                                  f"(line {n}: {exc})") from None
    return docs


#: What ``ingest cloudtrail`` reads in a folder: deliveries (JSON, gzipped) and CSV exports.
CLOUDTRAIL_SUFFIXES = (".json", ".json.gz", ".csv", ".csv.gz")


@ingest.command("cloudtrail")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@click.option("--link-long-term-keys", is_flag=True,
              help="Also link calls made with long-term AKIA keys (off: they would chain months of calls).")
@FOLLOW
@click.pass_obj
def cloudtrail(s: Settings, paths: tuple[Path, ...], scope: str | None, link_long_term_keys: bool,
               follow: bool) -> None:
    """Import CloudTrail files as delivered ({"Records": [...]}, .json.gz, directory trees), JSON lines,
    or CSV exports (OTRF layout, .csv/.csv.gz: one record per row, resumed at the row where it stopped).

    In a directory, files of other kinds are listed on stderr as not read.
    """
    from pipeline.sources import cloudtrail as ct

    def convert(rec: RawRecord) -> list[Event]:
        if isinstance(rec.payload, DecodeError):  # a CSV file that cannot be read (further)
            raise rec.payload
        if isinstance(rec.payload, dict):  # one row of a CSV export
            return ct.to_events(rec.payload, scope=_scope(s, scope), link_long_term_keys=link_long_term_keys)
        out: list[Event] = []
        for doc in _json_documents(rec):
            for record in ct.iter_records(doc):
                out.extend(ct.to_events(record, scope=_scope(s, scope), link_long_term_keys=link_long_term_keys))
        return out

    unread = files.unread_files(list(paths), CLOUDTRAIL_SUFFIXES)
    if unread:
        shown = ", ".join(str(f) for f in unread[:5]) + (f" (and {len(unread) - 5} more)" if len(unread) > 5 else "")
        err.print(f"cloudtrail: {len(unread)} file(s) not read (not {', '.join(CLOUDTRAIL_SUFFIXES)}): {shown}",
                  highlight=False)
    instance = ",".join(sorted(str(p.resolve()) for p in paths))
    _run(s, "cloudtrail", instance, lambda c: fetch_cloudtrail(list(paths), c), convert,
         total=files.total_size(list(paths), CLOUDTRAIL_SUFFIXES), follow=follow)


def fetch_cloudtrail(paths: list[Path], cursor: Any) -> Iterable[RawRecord]:
    """Deliveries one record per file (cursor ``{"after": file}``, as before); CSV exports one
    record per row (cursor ``{"after": file, "row": last line}``: a rerun reads rows added since)."""
    from pipeline.sources import cloudtrail as ct

    cursor = cursor if isinstance(cursor, dict) else {}
    after, done_row = cursor.get("after"), cursor.get("row")
    for f in files.expand(paths, CLOUDTRAIL_SUFFIXES):
        name = str(f)
        if after is not None and (name < after or (name == after and done_row is None)):
            continue
        data = files.read_bytes(f)
        if not f.name.endswith((".csv", ".csv.gz")):
            yield RawRecord(payload=data, cursor={"after": name}, origin=name, original=data)
            continue
        yield from _csv_records(ct, name, data, int(done_row) if name == after and done_row is not None else 0)


_CSV_DONE = 1 << 62  # the cursor row of a CSV file that could not be read (further): nothing more to read


def _csv_records(ct: Any, name: str, data: bytes, skip: int) -> Iterable[RawRecord]:
    if skip >= _CSV_DONE:
        return
    text = data.decode("utf-8", "replace")
    if not ct.is_csv_export(text.partition("\n")[0]):
        problem = DecodeError("invalid_value", f"{name} is not a CloudTrail CSV export (its header does not start "
                                               f"with {ct.CSV_HEADER!r})")
        yield RawRecord(payload=problem, cursor={"after": name, "row": _CSV_DONE}, origin=name, original=data)
        return
    lines = text.splitlines(keepends=True)
    rows = ct.csv_rows(text)
    last = max(skip, 1)  # the header, or the last row read
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except DecodeError as exc:  # the rest of the file is unreadable: it goes to the DLQ as one record
            rest = "".join(lines[last:]).encode()
            yield RawRecord(payload=DecodeError(exc.reason, f"{name}: {exc.detail}", field=exc.field),
                            cursor={"after": name, "row": _CSV_DONE}, origin=name, original=rest)
            return
        last = max(last, row.line_end)
        if row.line_end <= skip:
            continue
        original = "".join(lines[row.line - 1:row.line_end]).encode()
        yield RawRecord(payload=row.record, cursor={"after": name, "row": row.line_end},
                        origin=f"{name}:{row.line}", original=original)


def _line_source(kind: str, help_text: str, to_events: Callable[[Any, str], list[Event]]) -> None:
    @ingest.command(kind, help=help_text)
    @click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
    @click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
    @FOLLOW
    @click.pass_obj
    def command(s: Settings, paths: tuple[Path, ...], scope: str | None, follow: bool) -> None:
        _run_files(s, kind, paths, lambda obj: to_events(obj, _scope(s, scope)), follow=follow)


def _okta(obj: Any, scope: str) -> list[Event]:
    from pipeline.sources import okta

    return okta.to_events(obj, scope=scope)


def _github_audit(obj: Any, scope: str) -> list[Event]:
    from pipeline.sources import github_audit

    return github_audit.to_events(obj, scope=scope)


_line_source("okta", "Import Okta System Log exports (JSON lines; files or directory trees).", _okta)
_line_source("github-audit", "Import GitHub organisation audit-log exports (JSON lines; files or directory trees).", _github_audit)


@ingest.command("postgres-log")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--server", required=True, help="Name of the PostgreSQL server (session ids are unique per server).")
@click.option("--format", "fmt",
              type=click.Choice(["auto", "csvlog", "jsonlog", "stderr", "cloudsql", "pgaudit-transcript"]),
              default="auto", show_default=True,
              help="Log format (auto: from each file's first lines, a psql transcript with pgaudit AUDIT: lines "
                   "included; a directory then means its *.csv files).")
@click.option("--glob", "pattern", metavar="PATTERN",
              help="With a log directory: its files to read (default *.csv for csvlog and auto, *.json for "
                   "jsonlog and cloudsql, *.log for stderr).")
@click.option("--prefix", help="log_line_prefix of a stderr log (see pipeline/sources/postgres_log.py).")
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@FOLLOW
@click.pass_obj
def postgres_log(s: Settings, path: Path, server: str, fmt: str, pattern: str | None, prefix: str | None,
                 scope: str | None, follow: bool) -> None:
    """Import or tail PostgreSQL server logs: sessions, statements (literals never stored), pgaudit, grants.

    PATH is a log file or the server's log_directory; a directory's files are read in rotation
    order (modification time, then name), each resumed at the byte offset where the last run
    stopped; rotated, truncated and reused files are followed (see pipeline/sources/postgres_log.py,
    fetch_log). Only complete records are read: a record still being written waits for the next poll.
    """
    from pipeline.sources import postgres_log as pg

    if path.is_dir() and not follow and not pg.log_files(path, format=fmt, glob=pattern):
        # Reading nothing is not a successful import: say which files were looked for.
        used = pattern or pg.DEFAULT_GLOBS.get(fmt, "*.log")
        raise CauselogError(f"{path}: no file matches {used!r} (the files read for --format {fmt}); "
                            "name them with --glob, e.g. --glob '*.log'")

    def fetch(cursor: Any) -> Iterable[RawRecord]:
        for record, after in pg.fetch_log(path, cursor if isinstance(cursor, dict) else None, format=fmt,
                                          prefix=prefix, glob=pattern, final=not follow, stats=stats):
            text = record.message.encode("utf-8", "replace")
            yield RawRecord(payload=record, cursor=after, origin=f"{after['path']}:{record.line}", original=text)

    def convert(rec: RawRecord) -> list[Event]:
        return pg.to_events(rec.payload, scope=_scope(s, scope), server=server)

    # Lines that make no event (bad JSON, orphan continuations, a parallel worker's repeat of its
    # leader's pgaudit line): say how many of each.
    stats: Counter[str] = Counter()
    report = Report()
    try:
        report = _run(s, "postgres-log", f"{server}:{path.resolve()}", fetch, convert, total=None, follow=follow)
    finally:
        skipped = {k: v for k, v in stats.items() if k not in _NOT_SKIPPED and v}
        if skipped:
            err.print(f"postgres-log: {sum(skipped.values()):,} lines read but not sent as events: "
                      + ", ".join(f"{k} {v}" + _WHY_SKIPPED.get(k, "") for k, v in sorted(skipped.items())),
                      highlight=False)
    if not report.records and not stats["records"] and skipped:
        # Lines were read and none made a record: a wrong --format or --prefix, not an empty log.
        raise CauselogError(f"{path}: no PostgreSQL log record recognised in {sum(skipped.values()):,} lines "
                            f"(--format {fmt}); name the format with --format and, for a stderr log, "
                            "its log_line_prefix with --prefix")


_NOT_SKIPPED = ("records", "blank_lines", "continuation_lines")
_WHY_SKIPPED = {"orphan_lines": " (outside any record: text before the first one, or another format or prefix)"}


from pipeline.cli import ingest_git  # noqa: E402

ingest_git.register(ingest)
from pipeline.cli.ingest_config import config as _config  # noqa: E402

ingest.add_command(_config)

from pipeline.cli import ingest_debezium  # noqa: E402

ingest_debezium.register(ingest)

from pipeline.cli import ingest_plugin  # noqa: E402

ingest_plugin.register(ingest)
