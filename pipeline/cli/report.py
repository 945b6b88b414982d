"""``causelog report``: the accountability report of a period (changes by kind, target and person,
reviewed, verified, unowned, access changes), as text, JSON or one self-contained HTML file."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.cli import api
from pipeline.cli.timeparse import parse_time
from pipeline.errors import CauselogError
from pipeline.settings import Settings
from pipeline.stream.jsonio import dumps

out = Console(width=None if sys.stdout.isatty() else 400)  # piped: whole values, like the other commands
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # one line per message in a log


@click.command("report")
@click.option("--since", default="7d", show_default=True,
              help="Start: RFC 3339, '2026-11-27 02:14', 02:14 (today UTC) or 7d (ago).")
@click.option("--until", help="End, same forms as --since (default: now).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write the report as one self-contained HTML file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (every figure with its event ids).")
@click.pass_obj
def report(s: Settings, since: str, until: str | None, html_file: Path | None, as_json: bool) -> None:
    """Accountability report: changes by kind, target and person; the share reviewed (a review in
    their chain), with a verified identity (assurance mix) and without an owner (claimed identity,
    no linked commit, review or ticket); access and privilege changes. Every figure names its events.
    """
    now = datetime.now(UTC)
    t_since = parse_time(since, now)
    t_until = parse_time(until, now) if until else now
    result = fetch(s, t_since, t_until)
    if html_file is not None:
        from pipeline.report import accountability_html

        write_report(html_file, accountability_html(result))
    if as_json:
        click.echo(dumps(result))
        return
    _print(result)


def write_report(path: Path, html: str) -> None:
    """Write an HTML report and say where; one clear error when the file cannot be written."""
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise CauselogError(f"cannot write the report to {path}: {exc.strerror}") from None
    err.print(f"report written to {escape(str(path))}")


def fetch(s: Settings, since: datetime, until: datetime) -> dict[str, Any]:
    """The report from the worker API (embedded store) or the ClickHouse server."""
    if s.embedded:
        result: dict[str, Any] = api.call(s, "/v1/report", query={"since": since.isoformat(),
                                                                  "until": until.isoformat()})
        return result
    from pipeline.store import open_store
    from pipeline.store.identities import identity_map
    from pipeline.store.reports import accountability

    store = open_store(s, create=False)
    try:
        return accountability(store, since=since, until=until, identities=identity_map(store, s.identities_path))
    finally:
        store.close()


def _print(r: dict[str, Any]) -> None:
    s = r["summary"]
    n = s["changes"]

    def pct(k: str) -> str:
        return f"{s[k]}/{n} ({100 * s[k] / n:.0f} %)" if n else "0/0"

    out.print(f"[bold]{n} changes[/] {escape(str(r['since']))} .. {escape(str(r['until']))}: reviewed {pct('reviewed')}, "
              f"verified identity {pct('verified')}, no owner {pct('unowned')}"
              + (" [yellow](truncated)[/]" if r.get("truncated") else ""))
    for title, key, name in (("by kind", "by_kind", "kind"), ("by person", "by_person", "person"),
                             ("by target", "by_target", "target"), ("assurance", "assurance", "assurance")):
        table = Table(title, "changes", "events", title_justify="left")
        for g in r[key][:15]:
            ids = g["events"]
            table.add_row(escape(str(g[name])), str(g["changes"]),
                          escape(", ".join(ids[:3]) + (f" (+{len(ids) - 3})" if len(ids) > 3 else "")))
        out.print(table)
    for title, key in (("changes without an owner", "unowned"), ("access and privilege changes", "access")):
        table = Table("time (UTC)", "type", "target", "actor", "id", title=title, title_justify="left")
        for line in r[key][:50]:
            table.add_row(*(escape(str(line[c])) for c in ("time", "type", "target", "actor", "id")))
        out.print(table)
