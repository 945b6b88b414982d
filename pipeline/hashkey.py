"""The deployment's hash key on disk (I/O): ``$CAUSELOG_HOME/hash.key`` or ``CAUSELOG_HASH_KEY_FILE``.

The file holds 64 hex digits (32 random bytes) and a newline, mode 0600. It is created on first
use, atomically: the key is written to a private temporary file which is then hard-linked to the
final name, so two processes starting at once agree on one key (the loser reads the winner's).
Share it across hosts (sources on several machines feeding one deployment) by pointing
``CAUSELOG_HASH_KEY_FILE`` at a copy of the same file; see README "Keyed hashes" for rotation.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.sources import keyed
from pipeline.sources.keyed import Hasher

__all__ = ["install", "load_hasher", "read_key"]

_KEY_TEXT = re.compile(r"[0-9a-fA-F]{64}\s*")


def load_hasher(s: Settings) -> Hasher:
    """The deployment's :class:`Hasher`, creating the key file if it does not exist yet."""
    path = s.hash_key_path
    if not path.exists():
        if s.hash_key_file is not None:
            # A shared key that is missing must not be silently replaced by a new local one.
            raise ConfigError(f"CAUSELOG_HASH_KEY_FILE={str(path)!r} does not exist")
        _create(path)
    return Hasher(read_key(path))


def install(s: Settings) -> Hasher:
    """Load the deployment's key and install it for this process's normalizers (the one call
    every I/O shell makes before converting records)."""
    hasher = load_hasher(s)
    keyed.use(hasher)
    return hasher


def read_key(path: Path) -> bytes:
    """The key in ``path``; ConfigError when it is unreadable, malformed or readable by others."""
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"hash key {path}: cannot read it ({exc})") from None
    if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ConfigError(f"hash key {path}: mode {stat.S_IMODE(st.st_mode):04o} is open to others; chmod 600 it")
    if not _KEY_TEXT.fullmatch(text):
        raise ConfigError(f"hash key {path}: expected 64 hex digits (32 bytes), got {len(text.strip())} characters")
    return bytes.fromhex(text.strip())


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        # atomic, and fails if another process created the key first: then theirs is the key
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
