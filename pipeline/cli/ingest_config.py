"""``causelog ingest config DIR``: configuration files -> ``config.changed`` events.

Registered by the ingest group: ``from pipeline.cli.ingest_config import config;
ingest.add_command(config)`` (see :mod:`pipeline.sources.config_files` for what it emits).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import FOLLOW
from pipeline.model import Event
from pipeline.settings import Settings
from pipeline.sources import config_files as cf
from pipeline.sources.runner import RawRecord

# ``_run`` itself sleeps this long between two polls in follow mode.
_RUN_PAUSE = 1.0


@click.command("config")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@FOLLOW
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between two scans in follow mode.",
)
@click.pass_obj
def config(s: Settings, directory: Path, scope: str | None, follow: bool, interval: float) -> None:
    """Watch a directory of YAML, JSON, TOML, INI, .env and .properties files.

    Each added, changed or deleted file becomes one `config.changed` event with a structured diff
    (changed key paths, before/after, secrets hashed), attributed to the git author of the last
    commit when the file is committed and clean, else to the OS user (assurance `claimed`).
    Files that do not parse go to the DLQ once per content; the source goes on.
    """
    from pipeline.cli.ingest import _run

    root = directory.resolve()
    host = socket.gethostname()
    cache: cf.StatCache = {}
    scans = 0

    def fetch(cursor: Any) -> Iterator[RawRecord]:
        nonlocal scans
        if scans and interval > _RUN_PAUSE:
            time.sleep(interval - _RUN_PAUSE)
        scans += 1
        return cf.fetch_changes(root, cursor, cache=cache, host=host)

    def convert(rec: RawRecord) -> list[Event]:
        return cf.to_events(rec.payload, scope=scope or s.scope)

    _run(s, "config", f"{host}:{root}", fetch, convert, total=None, follow=follow)
