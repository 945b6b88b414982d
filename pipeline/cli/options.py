"""Options shared by several commands."""

from __future__ import annotations

import click

FOLLOW = click.option(
    "--follow/--once",
    default=False,
    help="--once (default): process what is there and exit, with a progress bar on a terminal; "
    "--follow: keep going as new input arrives (a file grows or is rotated, new files appear).",
)
