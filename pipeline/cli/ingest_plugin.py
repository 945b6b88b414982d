"""``causelog ingest plugin SPEC``: run a connector written against :mod:`pipeline.connect`.

SPEC is ``module:attribute`` (``my_pkg.connectors:Deploys``) or the name of an entry point in
group ``causelog.connectors`` (how a team ships its connector as its own package). The object
is a connector instance, or a class/factory called with the ``-o KEY=VALUE`` options.

:func:`register` adds ``plugin`` and the HTTP receivers ``cloudevents`` and ``webhook`` to the
``causelog ingest`` group.
"""

from __future__ import annotations

import importlib
import sys
import time
from importlib.metadata import entry_points
from typing import Any

import click
from rich.console import Console

from pipeline.cli.options import FOLLOW
from pipeline.errors import CauselogError, ConfigError, SourceError
from pipeline.settings import Settings

GROUP = "causelog.connectors"

err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # one line per message in a log


def load_spec(spec: str) -> Any:
    """The object SPEC names: ``module:attr[.attr]`` or an entry point name (ConfigError if none)."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import connector module {module_name!r}: {exc}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return obj
    found = [ep for ep in entry_points(group=GROUP) if ep.name == spec]
    if not found:
        known = sorted({ep.name for ep in entry_points(group=GROUP)})
        raise ConfigError(f"no connector {spec!r}: give MODULE:NAME or one of the installed entry points "
                          f"({', '.join(known) or 'none installed'})")
    try:
        return found[0].load()
    except Exception as exc:  # a broken plugin package: say which, never a traceback
        raise ConfigError(f"cannot load connector {spec!r} ({found[0].value}): {type(exc).__name__}: {exc}") from None


def _options(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-o/--option")
        out[key.strip()] = value
    return out


@click.command("plugin")
@click.argument("spec", required=False, metavar="MODULE:NAME|ENTRY_POINT")
@click.option("-o", "--option", "pairs", multiple=True, metavar="KEY=VALUE",
              help="Keyword argument for the connector's class/factory (repeatable).")
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between polls with --follow.")
@click.option("--list", "list_only", is_flag=True, help=f"List the installed connectors (entry points {GROUP}).")
@FOLLOW
@click.pass_obj
def plugin(s: Settings, spec: str | None, pairs: tuple[str, ...], scope: str | None, interval: float,
           list_only: bool, follow: bool) -> None:
    """Run a connector from any installed package (see pipeline/connect.py and examples/connectors/).

    Its cursor is committed in the same Kafka transaction as its events: run it again, or after a
    crash, and it resumes after the last committed chunk. Records it cannot convert go to the DLQ
    with their origin and reason (exit code 1 at the end of a --once run).
    """
    if list_only:
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            click.echo(f"{ep.name}\t{ep.value}")
        return
    if not spec:
        raise click.UsageError("give the connector: MODULE:NAME or an entry point name (see --list)")
    from pipeline.connect import as_connector, run_connector

    connector = as_connector(load_spec(spec), _options(pairs))
    started = time.monotonic()
    try:
        report = run_connector(connector, settings=s, follow=follow, interval=interval, scope=scope or s.scope)
    except CauselogError:
        raise
    except Exception as exc:  # a bug in the connector: one line, never a traceback
        raise SourceError(f"connector {connector.name!r} failed: {type(exc).__name__}: {exc} (nothing of the "
                          "open chunk was committed; a fixed connector resumes from the last commit)") from None
    elapsed = time.monotonic() - started
    why = ", ".join(f"{k} {v}" for k, v in sorted(report.reasons.items()))
    err.print(f"{connector.name}: {report.records:,} records -> {report.events:,} events"
              + (f"; [red]{report.rejected} rejected to the DLQ[/] ({why})" if report.rejected else "")
              + f" in {elapsed:.1f}s, {report.commits} commits", highlight=False)
    if report.rejected and not follow:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    """Add ``plugin``, ``cloudevents`` and ``webhook`` to the ``causelog ingest`` group."""
    from pipeline.cli.ingest_http import cloudevents, webhook

    group.add_command(plugin)
    group.add_command(cloudevents)
    group.add_command(webhook)
