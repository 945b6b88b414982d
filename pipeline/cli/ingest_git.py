"""``causelog ingest git PATH_OR_URL``: commits on every branch, merges and tags of a repository.

Register it with ``register(ingest)`` (``pipeline.cli.ingest.ingest`` is the group); ``command``
is the click command itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from pipeline.cli.options import FOLLOW
from pipeline.model import Event
from pipeline.settings import Settings
from pipeline.sources.runner import RawRecord


@click.command("git")
@click.argument("location", metavar="PATH_OR_URL")
@click.option("--scope", help="Scope of the events (default CAUSELOG_SCOPE).")
@click.option("--repo-name", help="Repository name in events (default: origin URL without credentials, "
              "else the absolute path; the URL for remotes).")
@click.option("--allowed-signers", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="ssh allowed-signers file for verifying SSH-signed commits and tags "
              "(default: the repository's gpg.ssh.allowedSignersFile).")
@FOLLOW
@click.option("--interval", type=click.FloatRange(min=1.0), default=30.0, show_default=True,
              help="Seconds between polls with --follow (a remote is fetched on every poll).")
@click.pass_obj
def command(s: Settings, location: str, scope: str | None, repo_name: str | None,
            allowed_signers: Path | None, follow: bool, interval: float) -> None:
    """Import a git repository (local path, or a URL mirrored under CAUSELOG_HOME/git).

    Each commit is one git.commit (git.merge) event linked by commit:<sha>; each tag one git.tag.
    Runs are incremental: the cursor remembers the ref tips already read.
    """
    from pipeline.cli.ingest import _run
    from pipeline.sources import git

    last_poll = [0.0]

    def fetch(cursor: Any) -> Iterable[RawRecord]:
        if follow:  # _run polls every second; a repository is polled every `interval` seconds
            wait = last_poll[0] + interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            last_poll[0] = time.monotonic()
        return git.fetch_records(location, cursor, home=s.home, allowed_signers=allowed_signers)

    def convert(rec: RawRecord) -> list[Event]:
        return git.to_events(rec.payload, scope=scope or s.scope, repo=repo_name)

    instance = git.repo_identity(location) if git.is_url(location) else str(Path(location).resolve())
    _run(s, "git", instance, fetch, convert, total=None, follow=follow)


def register(group: click.Group) -> None:
    """Add ``git`` to the ``causelog ingest`` group."""
    group.add_command(command)
