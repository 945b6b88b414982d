"""``causelog ingest debezium --topic T --server NAME``: Debezium change-event topics -> envelopes.

Register it with ``register(ingest)`` (``pipeline.cli.ingest.ingest`` is the group); ``command``
is the click command itself. The Kafka loop is :func:`pipeline.bus.relay.relay` (exactly once:
events, DLQ records and the input offsets of the group ``causelog-debezium-<server>`` are
committed in one transaction); the conversion is :func:`pipeline.sources.debezium.to_events`.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from typing import Any

import click
import orjson

from pipeline.cli.options import FOLLOW
from pipeline.errors import DecodeError
from pipeline.model import Event
from pipeline.settings import Settings


def _json(data: bytes, what: str, origin: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("bad_json", f"the {what} of {origin} is not JSON: {exc}") from None


@click.command("debezium")
@click.option("--topic", "topics", multiple=True, required=True, metavar="TOPIC",
              help="Debezium change-event topic (JSON converter, with or without schemas); repeatable.")
@click.option("--server", required=True,
              help="Name of the database server, as the postgres-log source names it (links transactions).")
@click.option("--values", type=click.Choice(["hash", "redact", "keep"]), default="hash", show_default=True,
              help="Column values: hash every value, redact secret-like ones, or keep them (non-personal tables only).")
@click.option("--primary-key", "primary_key", multiple=True, metavar="COLUMN",
              help="Primary-key column(s) used when records carry no key; repeatable.")
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@click.option("--group", help="Consumer group holding the input offsets (default causelog-debezium-<server>).")
@click.option("--batch", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Most records per Kafka transaction.")
@FOLLOW
@click.pass_obj
def command(s: Settings, topics: tuple[str, ...], server: str, values: str, primary_key: tuple[str, ...],
            scope: str | None, group: str | None, batch: int, follow: bool) -> None:
    """Consume Debezium change-event topics into data.changed events, exactly once.

    --once (default) stops when every partition reached the end it had at the start; --follow
    runs until SIGTERM/Ctrl-C. Unconvertible records go to the DLQ (exit 1 with --once). A
    Kafka failure exits 2: run it again (or under a supervisor) and it resumes from the offsets
    committed with the last batch, repeating nothing.
    """
    from pipeline.bus import ensure_topics
    from pipeline.bus.relay import relay
    from pipeline.cli.ingest import _summary, err
    from pipeline.hashkey import install
    from pipeline.sources import debezium

    if any(c.isspace() for c in server) or not server:
        raise click.BadParameter("must be non-empty without whitespace", param_hint="--server")
    stats: Counter[str] = Counter()
    the_scope = scope or s.scope

    def convert(value: bytes | None, topic: str, partition: int, offset: int, key: bytes | None) -> list[Event]:
        origin = f"{topic}[{partition}]@{offset}"
        doc = None if value is None else _json(value, "value", origin)
        try:
            key_doc = orjson.loads(key) if key else None
        except orjson.JSONDecodeError:
            key_doc = None  # a non-JSON key names no column: fall back to --primary-key
        return debezium.to_events(doc, scope=the_scope, topic=topic, key=key_doc, server=server, values=values,
                                  primary_key=list(primary_key) or None, stats=stats)

    install(s)
    ensure_topics(s)
    # SIGTERM/Ctrl-C end the run after the batch in hand is committed (with --once as well).
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    report = relay(s, topics, group or f"causelog-debezium-{server}", convert, kind="debezium", batch=batch,
                   once=not follow, stop=stop)
    _summary("debezium", report)
    if stats:
        err.print("skipped (no event): " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.items())))
    if report.rejected and not follow:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    """Add ``debezium`` to the ``causelog ingest`` group."""
    group.add_command(command)
