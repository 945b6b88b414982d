"""``causelog token``: create, list and revoke the API's bearer tokens.

The commands edit the token file (``CAUSELOG_TOKENS_FILE``, default ``$CAUSELOG_HOME/tokens.json``)
directly; the worker notices each change on its next request, so a revoked token stops working
at once. See :mod:`pipeline.tokens`.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from pipeline import tokens
from pipeline.settings import Settings
from pipeline.stream.jsonio import dumps

err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())  # one line per message in a log


@click.group("token")
def token() -> None:
    """Manage the API's bearer tokens (roles: reader, auditor, admin).

    reader: timeline, why, chain, session, trace, who, sql, alerts, stats. auditor: reader plus
    verify and evidence. admin: everything, including tokens and rules.
    """


@token.command("create")
@click.option("--role", "-r", required=True, type=click.Choice(tokens.ROLES), help="What the token may do.")
@click.option("--name", "-n", required=True, help="Who or what uses it (shown as the actor of its queries).")
@click.pass_obj
def create(s: Settings, role: str, name: str) -> None:
    """Create a token and print it once (only its hash is kept)."""
    value = tokens.create(s.tokens_path, name, role)
    click.echo(value)
    err.print(f"token {name!r} ({role}) created in {s.tokens_path}; it is shown only now. "
              "Use it as CAUSELOG_TOKEN or 'Authorization: Bearer <token>'.", highlight=False)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_(s: Settings, as_json: bool) -> None:
    """List the tokens: name, role, creation time (never the tokens themselves)."""
    found = tokens.load(s.tokens_path)
    if as_json:
        click.echo(dumps([{"name": t.name, "role": t.role, "created": t.created} for t in found]))
        return
    table = Table("name", "role", "created")
    for t in found:
        table.add_row(t.name, t.role, t.created)
    Console().print(table)
    err.print(f"{len(found)} token(s) in {s.tokens_path}", highlight=False)


@token.command("revoke")
@click.argument("name")
@click.pass_obj
def revoke(s: Settings, name: str) -> None:
    """Revoke the token called NAME; the worker refuses it from its next request on."""
    gone = tokens.revoke(s.tokens_path, name)
    err.print(f"token {gone.name!r} ({gone.role}) revoked", highlight=False)
