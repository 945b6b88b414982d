"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519, compatible with Go's
``golang.org/x/mod/sumdb/note``. Pure.

- a note is its text (non-empty, ending in ``\\n``), a blank line, then signature lines
  ``— <key name> <base64(4-byte key hash || signature)>`` (U+2014 EM DASH);
- key hash: the first 4 bytes (big-endian) of ``SHA-256(key name || 0x0A || 0x01 || public key)``;
- verifier key: ``<name>+<8 hex key hash>+<base64(0x01 || public key)>``;
- private key (Go's format, what ``signing.key`` holds):
  ``PRIVATE+KEY+<name>+<8 hex key hash>+<base64(0x01 || 32-byte seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from pipeline.errors import IntegrityError

ALG_ED25519 = 0x01
DASH = "\u2014"


def key_hash(name: str, key: bytes) -> bytes:
    """First 4 bytes of ``SHA-256(name || "\\n" || key)``; ``key`` starts with its algorithm byte."""
    return hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise IntegrityError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


@dataclass(frozen=True)
class Verifier:
    """A public key with its name and key hash."""

    name: str
    public_key: bytes

    @property
    def hash(self) -> bytes:
        """The 4-byte key hash."""
        return key_hash(self.name, bytes([ALG_ED25519]) + self.public_key)

    @property
    def vkey(self) -> str:
        """The verifier key string ``name+hash+base64``."""
        data = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.hash.hex()}+{data}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``text``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except InvalidSignature:
            return False
        return True


def parse_vkey(vkey: str) -> Verifier:
    """Parse a verifier key; ``IntegrityError`` naming what is wrong."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise IntegrityError(f"verifier key {vkey.strip()[:80]!r} must look like name+hash+base64")
    name, hash16, key64 = parts
    _check_name(name)
    try:
        key = base64.b64decode(key64, validate=True)
        want = bytes.fromhex(hash16)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"verifier key {name!r}: bad hash or base64 key") from None
    if len(hash16) != 8 or len(key) != 33 or key[0] != ALG_ED25519:
        raise IntegrityError(f"verifier key {name!r} is not an Ed25519 key (algorithm 1, 32 bytes)")
    if key_hash(name, key) != want:
        raise IntegrityError(f"verifier key {name!r}: key hash {hash16} does not match the key")
    return Verifier(name, key[1:])


@dataclass(frozen=True)
class Signer:
    """An Ed25519 private key (its 32-byte seed) with its key name."""

    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key."""
        key = Ed25519PrivateKey.generate()
        return cls(_check_name(name), key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @property
    def verifier(self) -> Verifier:
        """The matching public key."""
        pub = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, pub)

    @property
    def skey(self) -> str:
        """The private key in Go's note format (``PRIVATE+KEY+name+hash+base64``)."""
        v = self.verifier
        return f"PRIVATE+KEY+{self.name}+{v.hash.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()}"

    def sign(self, text: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``text``."""
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(text)


def parse_skey(skey: str) -> Signer:
    """Parse a private key in Go's note format; ``IntegrityError`` if malformed."""
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise IntegrityError("signing key must look like PRIVATE+KEY+name+hash+base64 (Go note format)")
    name, hash16, key64 = parts[2:]
    _check_name(name)
    try:
        key = base64.b64decode(key64, validate=True)
    except binascii.Error:
        raise IntegrityError(f"signing key {name!r}: bad base64") from None
    if len(key) != 33 or key[0] != ALG_ED25519:
        raise IntegrityError(f"signing key {name!r} is not an Ed25519 key (algorithm 1, 32 bytes)")
    signer = Signer(name, key[1:])
    if signer.verifier.hash.hex() != hash16.lower():
        raise IntegrityError(f"signing key {name!r}: key hash {hash16} does not match the key")
    return signer


def _check_text(text: str) -> None:
    if not text or not text.endswith("\n") or "\n\n" in text:
        raise IntegrityError("note text must be non-empty, end with a newline and hold no blank line")


def sign_note(text: str, *signers: Signer) -> str:
    """The signed note: ``text``, a blank line, one signature line per signer."""
    _check_text(text)
    lines = []
    for s in signers:
        sig = s.verifier.hash + s.sign(text.encode())
        lines.append(f"{DASH} {s.name} {base64.b64encode(sig).decode()}\n")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    hash: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A parsed note: its text and every signature line (verified or not)."""

    text: str
    signatures: tuple[Signature, ...]


def parse_note(note: str) -> Note:
    """Split a note into its text and signature lines; ``IntegrityError`` if malformed."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise IntegrityError("malformed note: no blank line before the signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    sigs = []
    for line in block.splitlines():
        head, _, rest = line.partition(" ")
        name, _, sig64 = rest.partition(" ")
        if head != DASH or not name or not sig64 or " " in sig64:
            raise IntegrityError(f"malformed signature line {line[:80]!r}")
        try:
            raw = base64.b64decode(sig64, validate=True)
        except binascii.Error:
            raise IntegrityError(f"signature of {name!r}: bad base64") from None
        if len(raw) < 5:
            raise IntegrityError(f"signature of {name!r} is too short")
        sigs.append(Signature(name, raw[:4], raw[4:]))
    if not sigs:
        raise IntegrityError("note has no signature")
    return Note(text, tuple(sigs))


def open_note(note: str, verifiers: list[Verifier]) -> str:
    """The text of ``note`` if one of ``verifiers`` signed it (and no known key's signature is
    bad); ``IntegrityError`` saying which key failed or that no known key signed it."""
    parsed = parse_note(note)
    known = {(v.name, v.hash): v for v in verifiers}
    good = 0
    for s in parsed.signatures:
        v = known.get((s.name, s.hash))
        if v is None:
            continue
        if len(s.signature) != 64 or not v.verify(parsed.text.encode(), s.signature):
            raise IntegrityError(f"bad signature by key {s.name}+{s.hash.hex()}")
        good += 1
    if not good:
        names = ", ".join(f"{s.name}+{s.hash.hex()}" for s in parsed.signatures)
        raise IntegrityError(f"note is not signed by a known key (signed by {names})")
    return parsed.text
