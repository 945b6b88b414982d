"""Who may push changes over HTTP: an HMAC signature of the body, or a bearer token (pure).

Isolated on purpose: the receivers take one ``authorize(request) -> bool`` callable built by
:func:`request_authorizer` from

- a shared secret: ``X-Causelog-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (the
  GitHub scheme, so the same tooling signs both), and/or
- a bearer check ``authorize(token) -> bool``: :func:`bearer_check` compares the SHA-256 of
  the presented token (constant time) against the hashes of tokens holding the ``ingest`` role,
  read by :func:`load_token_hashes` from a JSON file (the API tokens file,
  ``$CAUSELOG_HOME/tokens.json``, once the access work lands; any file of the shape below until
  then). Tokens are never stored, only their hashes.

Token file shape (either form)::

    {"tokens": [{"name": "argocd", "sha256": "<64 hex>", "roles": ["ingest"]}, ...]}
    [{"name": "argocd", "hash": "sha256:<64 hex>", "roles": ["ingest"]}, ...]
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import orjson

from pipeline.errors import ConfigError

__all__ = ["SIGNATURE_HEADER", "TokenFile", "bearer_check", "hash_token", "load_token_hashes", "request_authorizer"]

log = logging.getLogger("causelog.receiver")

SIGNATURE_HEADER = "x-causelog-signature-256"
ROLE = "ingest"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIG = re.compile(r"sha256=([0-9a-fA-F]{64})")


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what a token file stores instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_check(hashes: Iterable[str]) -> Callable[[str], bool]:
    """``authorize(token) -> bool``: true when the token's hash is one of ``hashes``."""
    known = [bytes.fromhex(h) for h in hashes]

    def authorize(token: str) -> bool:
        if not token or not known:
            return False
        digest = hashlib.sha256(token.encode()).digest()
        ok = False
        for h in known:  # no early exit: timing says nothing about which hash matched
            ok |= hmac.compare_digest(digest, h)
        return ok

    return authorize


def load_token_hashes(path: Path, role: str = ROLE) -> list[str]:
    """Hashes of the tokens in ``path`` holding ``role`` (ConfigError for an unusable file)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"token file {path} is not JSON: {exc}") from None
    entries = doc.get("tokens") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ConfigError(f"token file {path}: expected a list of tokens or {{\"tokens\": [...]}}")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"token file {path}: entry {i} is not an object")
        roles = entry.get("roles") or ([entry["role"]] if isinstance(entry.get("role"), str) else [])
        if role not in roles:
            continue
        value = str(entry.get("sha256") or entry.get("hash") or "").lower().removeprefix("sha256:")
        if not _HEX64.fullmatch(value):
            raise ConfigError(f"token file {path}: entry {i} ({entry.get('name', '?')}) has no sha256 hash")
        out.append(value)
    return out


class TokenFile:
    """``authorize(token) -> bool`` against a token file, re-read when it changes (a token added or
    revoked takes effect without restarting the receiver). A file that becomes unreadable or
    invalid keeps the last good hashes (and :attr:`error` says why) rather than locking everyone
    out or letting everyone in."""

    def __init__(self, path: Path, role: str = ROLE) -> None:
        self.path, self.role = path, role
        self.error: str | None = None
        self._stamp = self._stat()
        self._check = bearer_check(load_token_hashes(path, role))  # ConfigError at start: fail fast
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def __call__(self, token: str) -> bool:
        stamp = self._stat()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._check = bearer_check(load_token_hashes(self.path, self.role))
                        self.error = None
                    except ConfigError as exc:
                        self.error = str(exc)
                        log.warning("%s; the tokens read before stay in force", exc)
        return self._check(token)


def _signed(secret: bytes, body: bytes, header: str | None) -> bool:
    if not secret or header is None:
        return False
    m = _SIG.fullmatch(header.strip())
    return m is not None and hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(),
                                                 bytes.fromhex(m.group(1)))


def request_authorizer(
    *, secret: bytes | None = None, bearer: Callable[[str], bool] | None = None
) -> Callable[[Mapping[str, str], bytes], bool]:
    """``authorize(headers, body) -> bool`` accepting a valid signature or a valid bearer token.

    ``headers`` are lower-cased names. With neither a secret nor a bearer check nothing is
    accepted (a receiver must be told whom to trust).
    """

    def authorize(headers: Mapping[str, str], body: bytes) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.strip().partition(" ")
        if bearer is not None and scheme.lower() == "bearer" and token.strip():
            return bearer(token.strip())
        return secret is not None and _signed(secret, body, headers.get(SIGNATURE_HEADER))

    return authorize


