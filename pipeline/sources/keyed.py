"""Keyed hashes of user values (pure): HMAC-SHA256 with a per-deployment key.

Every value causelog keeps only as a hash -- redacted secrets, database statements, Debezium
column values, the text behind a PostgreSQL record's id -- is hashed with HMAC-SHA256 under the
deployment's key, never with a plain hash: a plain SHA-256 of a low-entropy value (``hunter2``)
is recovered from what is stored by hashing a dictionary; without the key it cannot be.

Format: ``hmac-sha256:v1:<32 hex>`` (:meth:`Hasher.tag`); redaction markers are
``redacted:hmac-sha256:v1:<32 hex>``. ``v1`` is the format version (algorithm, key use and
length); a new format gets a new version, so old and new values are never mistaken for one
another. 32 hex digits are the first 128 bits of the HMAC: two different values collide with
probability 2^-128, and only after ~2^64 distinct values does a collision become likely.

Equal values give equal hashes under one key (so a change, or the same statement twice, is
visible), and different hashes under another key: hashes are comparable only within one
deployment, and across a key rotation only under the key that made them.

The key is injected, never read here: the I/O shells (``causelog ingest ...``, the receivers,
the Debezium relay) load it once with :func:`pipeline.hashkey.load_hasher` and install it with
:func:`use`; normalizers call :func:`current`. Given the key, every function is deterministic.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from pipeline.errors import ConfigError

__all__ = ["HEX_DIGITS", "MIN_KEY_BYTES", "PREFIX", "Hasher", "current", "use"]

PREFIX = "hmac-sha256:v1:"
HEX_DIGITS = 32  # 128 bits
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class Hasher:
    """HMAC-SHA256 under one deployment key (the key is never shown in ``repr``)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) < MIN_KEY_BYTES:
            raise ConfigError(f"a hash key must be at least {MIN_KEY_BYTES} bytes")

    def hex(self, data: bytes | str) -> str:
        """The first :data:`HEX_DIGITS` hex digits of HMAC-SHA256(key, data); strings as UTF-8."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        return hmac.digest(self.key, data, hashlib.sha256).hex()[:HEX_DIGITS]

    def tag(self, data: bytes | str) -> str:
        """``hmac-sha256:v1:<hex>``: :meth:`hex` with its format version."""
        return PREFIX + self.hex(data)


_current: Hasher | None = None


def use(hasher: Hasher | None) -> None:
    """Install the deployment's hasher for the normalizers of this process (None uninstalls)."""
    global _current
    _current = hasher


def current() -> Hasher:
    """The installed hasher; ConfigError when no shell installed one (never a weaker fallback)."""
    if _current is None:
        raise ConfigError(
            "no hash key loaded: call pipeline.sources.keyed.use(pipeline.hashkey.load_hasher(settings)) "
            "before normalizing records"
        )
    return _current
