"""The checkpoint signing key on disk: Go's note private-key format, one line, mode 0600."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import IntegrityError
from pipeline.integrity.note import Signer, Verifier, parse_skey, parse_vkey


def read_key(path: Path) -> Signer:
    """The key in ``path``; ``IntegrityError`` naming the file if missing, unreadable or malformed."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise IntegrityError(f"no signing key at {path}: the worker creates it on its first start "
                             "(or set CAUSELOG_SIGNING_KEY_FILE)") from None
    except OSError as exc:
        raise IntegrityError(f"cannot read the signing key {path}: {exc.strerror}") from None
    try:
        return parse_skey(text)
    except IntegrityError as exc:
        raise IntegrityError(f"{path}: {exc}") from None


def load_or_create(path: Path, name: str) -> tuple[Signer, bool]:
    """The key in ``path``, created (0600, named ``name``) if the file does not exist; also
    whether it was created now."""
    if path.exists():
        return read_key(path), False
    signer = Signer.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two workers starting at once must not overwrite each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_key(path), False
    with os.fdopen(fd, "w") as f:
        f.write(signer.skey + "\n")
    return signer, True


def trusted(key_path: Path, vkeys: list[str]) -> list[Verifier]:
    """The verifiers ``verify`` trusts: the signing key's (when ``key_path`` exists) and ``vkeys``
    (verifier key strings)."""
    out = [parse_vkey(v) for v in vkeys]
    if key_path.exists():
        out.insert(0, read_key(key_path).verifier)
    if not out:
        raise IntegrityError(f"no key to verify with: no signing key at {key_path} and no --vkey given")
    return out
