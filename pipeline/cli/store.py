"""``causelog store ...``: operator tools for the ClickHouse store (server mode)."""

from __future__ import annotations

import click

from pipeline.settings import Settings


@click.group()
def store() -> None:
    """Operator tools for the ClickHouse store (see README, "Server mode: least privilege")."""


@store.command("grants")
@click.option("--database", help="ClickHouse database of the tables (default CAUSELOG_DATABASE).")
@click.option("--writer-user", default="causelog_worker", show_default=True,
              help="User of the worker (role causelog_writer: SELECT, INSERT, its migrations' additive DDL).")
@click.option("--reader-user", default="causelog_api", show_default=True,
              help="User of the API and other readers (role causelog_reader: SELECT only, readonly=1, bounded).")
@click.pass_obj
def grants(s: Settings, database: str | None, writer_user: str, reader_user: str) -> None:
    """Print the ClickHouse SQL creating least-privilege roles and users for server mode.

    Run the output once as an operator (a user with access management) on the server, e.g.
    `causelog store grants | clickhouse-client --multiquery`. The worker's role may read,
    insert and run the migrations (CREATE TABLE/VIEW, additive ALTERs derived from
    schemas/clickhouse); the reader's may only SELECT, with readonly=1 and fixed limits; ALTER,
    DELETE, DROP and table functions stay with operators. The users get new random passwords.
    With CAUSELOG_CLICKHOUSE_CLUSTER set the writer also gets CLUSTER (ON CLUSTER migrations);
    run the script on every node.
    """
    from pipeline.store.grants import Grants, grants_sql

    g = Grants(database=database or s.database, writer_user=writer_user, reader_user=reader_user)
    click.echo(grants_sql(g, cluster=s.clickhouse_cluster or None), nl=False)
