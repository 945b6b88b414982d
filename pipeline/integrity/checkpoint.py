"""C2SP tlog-checkpoint bodies (https://c2sp.org/tlog-checkpoint). Pure.

``<origin>\\n<tree size in decimal>\\n<base64 root hash>\\n`` followed by optional extension
lines; signed as a note (:mod:`pipeline.integrity.note`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from pipeline.errors import IntegrityError
from pipeline.integrity.note import Signer, Verifier, open_note, sign_note


@dataclass(frozen=True)
class Checkpoint:
    """The state of one log: its origin, size and root hash."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The checkpoint text as signed."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def sign(self, signer: Signer) -> str:
        """The signed note of this checkpoint."""
        return sign_note(self.body(), signer)


def parse_body(text: str) -> Checkpoint:
    """Parse a checkpoint body; ``IntegrityError`` naming the bad line."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise IntegrityError("checkpoint must have an origin, a size and a root hash line")
    origin, size, root64 = lines[0], lines[1], lines[2]
    if not origin:
        raise IntegrityError("checkpoint origin line is empty")
    if not size.isascii() or not size.isdigit() or (len(size) > 1 and size[0] == "0"):
        raise IntegrityError(f"checkpoint size {size!r} is not a decimal number")
    try:
        root = base64.b64decode(root64, validate=True)
    except binascii.Error:
        raise IntegrityError(f"checkpoint root {root64!r} is not base64") from None
    if len(root) != 32:
        raise IntegrityError(f"checkpoint root is {len(root)} bytes, expected 32")
    return Checkpoint(origin, int(size), root)


def open_checkpoint(note: str, verifiers: list[Verifier]) -> Checkpoint:
    """Verify a signed checkpoint note and parse its body."""
    return parse_body(open_note(note, verifiers))
