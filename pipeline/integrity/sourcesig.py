"""Connector signatures (optional per source): a source holding a key signs each envelope; the
worker, given the sources' verifier keys, refuses events of a signing source whose signature is
missing or wrong (DLQ reason ``bad_signature``). Pure.

- signed bytes: the envelope without its ``signature`` field, as compact JSON with sorted keys
  (:func:`canonical`), exactly as the source sends it otherwise (``observed_time`` included);
- ``signature``: ``ed25519:<base64(4-byte key hash || 64-byte Ed25519 signature)>``, the key hash
  as in C2SP signed notes, so a key can be rotated and named;
- ``CAUSELOG_SOURCE_KEYS``: a text file of ``<source prefix> <verifier key>`` lines (``#``
  comments); an event whose ``source`` starts with a prefix must be signed by that key (the
  longest prefix wins). Sources not listed need no signature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from pipeline.errors import ConfigError, DecodeError, IntegrityError
from pipeline.integrity.note import Signer, Verifier, parse_vkey
from pipeline.model import Event
from pipeline.model.codec import to_dict

PREFIX = "ed25519:"
_decoder = msgspec.json.Decoder()


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes a source signs: the envelope without ``signature``, compact, keys sorted."""
    return msgspec.json.encode({k: v for k, v in obj.items() if k != "signature"}, order="sorted")


def sign_event(event: Event, signer: Signer) -> Event:
    """``event`` with its ``signature`` set by ``signer``."""
    sig = signer.verifier.hash + signer.sign(canonical(to_dict(event)))
    return msgspec.structs.replace(event, signature=PREFIX + base64.b64encode(sig).decode())


def required_key(source: str, keys: Mapping[str, Verifier]) -> Verifier | None:
    """The key that must have signed events of ``source`` (longest matching prefix), if any."""
    best = None
    for prefix, v in keys.items():
        if source.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, v)
    return None if best is None else best[1]


def check_envelope(raw: bytes, source: str, keys: Mapping[str, Verifier]) -> None:
    """Raise ``DecodeError("bad_signature")`` if ``source`` must sign and the envelope ``raw``
    (already validated) carries no valid signature by its key."""
    key = required_key(source, keys)
    if key is None:
        return
    obj = _decoder.decode(raw)
    value = obj.get("signature")
    if not isinstance(value, str) or not value.startswith(PREFIX):
        raise DecodeError("bad_signature", f"source {source!r} must sign its events (key {key.name}) and this one "
                          "has no ed25519 signature", field="$.signature", value=value)
    try:
        sig = base64.b64decode(value[len(PREFIX):], validate=True)
    except binascii.Error:
        raise DecodeError("bad_signature", "signature is not base64", field="$.signature", value=value) from None
    if len(sig) != 68 or sig[:4] != key.hash or not key.verify(canonical(obj), sig[4:]):
        raise DecodeError("bad_signature", f"signature does not verify with the key {key.name}+{key.hash.hex()} "
                          f"required for source {source!r}", field="$.signature", value=value)


def load_source_keys(path: Path) -> dict[str, Verifier]:
    """Read a ``CAUSELOG_SOURCE_KEYS`` file; ``ConfigError`` naming the file and line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read CAUSELOG_SOURCE_KEYS file {path}: {exc.strerror}") from None
    out: dict[str, Verifier] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(f"{path}:{number}: expected '<source prefix> <verifier key>'")
        try:
            out[parts[0]] = parse_vkey(parts[1])
        except IntegrityError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
    return out


def source_signer(key_file: Path | None) -> Callable[[Event], Event] | None:
    """The signing step of a source started with ``key_file`` (None: sources do not sign)."""
    if key_file is None:
        return None
    from pipeline.integrity.keyfile import read_key

    signer = read_key(key_file)
    return lambda event: sign_event(event, signer)
