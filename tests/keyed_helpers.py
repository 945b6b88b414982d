"""The tests' fixed hash key and an independent reference of the keyed hash formats.

``marker`` and ``tag`` recompute what :mod:`pipeline.sources.keyed` must produce with the
standard library alone, so tests compare against the specification, not against the code.
"""

from __future__ import annotations

import hashlib
import hmac

#: 32 fixed bytes, installed for every test by tests/conftest.py: golden files depend on them.
TEST_HASH_KEY = bytes(range(32))


def tag(value: str | bytes, key: bytes = TEST_HASH_KEY) -> str:
    """``hmac-sha256:v1:<first 32 hex of HMAC-SHA256(key, value)>``."""
    data = value.encode() if isinstance(value, str) else value
    return "hmac-sha256:v1:" + hmac.new(key, data, hashlib.sha256).hexdigest()[:32]


def marker(value: str | bytes, key: bytes = TEST_HASH_KEY) -> str:
    """The redaction marker of ``value``: ``redacted:hmac-sha256:v1:<32 hex>``."""
    return "redacted:" + tag(value, key)
