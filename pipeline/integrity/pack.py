"""Evidence packs: a folder anyone can check without causelog (RFC 6962 + C2SP signed notes).

- ``events.jsonl``: the stored envelopes, one per line, exactly the bytes that were hashed;
- ``checkpoint``: the signed checkpoint covering them (with events from several logs:
  ``checkpoint.<log>``, one per log; each proof names its file);
- ``key.vkey``: the verifier key (``causelog keys show``'s first line);
- ``proofs.json``: ``{"<event id>": {"index": i, "size": n, "hashes": ["<base64>", ...],
  "checkpoint": "<file>", "log": p}}``, the RFC 6962 audit path, leaf level first;
- ``query.txt`` and ``README``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.errors import IntegrityError
from pipeline.integrity.checkpoint import Checkpoint, open_checkpoint
from pipeline.integrity.merkle import Tree, leaf_hash, verify_inclusion
from pipeline.integrity.note import Verifier, parse_vkey

README = """\
Evidence pack made by causelog (https://c2sp.org/tlog-checkpoint, RFC 6962).

Each line of events.jsonl is one event exactly as stored. To check it without causelog:

1. Verify the signed note in `{checkpoint}` with the verifier key in key.vkey
   (C2SP signed-note, Ed25519; e.g. Go's golang.org/x/mod/sumdb/note). Compare the key with one
   you obtained independently (`causelog keys show` on the deployment).
2. Its body is `<origin>\\n<size>\\n<base64 root hash>\\n`.
3. For each line (its bytes without the final newline), leaf = SHA-256(0x00 || line). proofs.json
   gives, by event id, the leaf's index, the tree size and the audit path (base64, leaf level first).
   Fold it as RFC 9162 section 2.1.3.2 says (node = SHA-256(0x01 || left || right)); the result must equal
   the checkpoint's root, and the size must equal the checkpoint's size.

Or run: causelog verify-pack .
"""


@dataclass(frozen=True)
class PackEvent:
    """One event to put in a pack: its id, stored envelope, log and index."""

    event_id: str
    envelope: bytes
    log: int
    index: int


def make_pack(
    events: Sequence[PackEvent],
    logs: Mapping[int, tuple[Tree, Checkpoint, str]],
    vkey: str,
    query: str,
) -> dict[str, bytes]:
    """The files of a pack. ``logs``: per log, its tree (leaf hashes from the store), the
    checkpoint to prove against and that checkpoint's signed note."""
    names = {p: ("checkpoint" if len(logs) == 1 else f"checkpoint.{p}") for p in logs}
    proofs: dict[str, object] = {}
    lines = []
    for e in events:
        if b"\n" in e.envelope or b"\r" in e.envelope:
            raise IntegrityError(f"event {e.event_id}: its stored envelope holds a line break, "
                                 "so it cannot be one line of events.jsonl")
        tree, cp, _ = logs[e.log]
        if e.index >= cp.size:
            raise IntegrityError(f"event {e.event_id} (log {e.log}, index {e.index}) is not covered by a signed "
                                 f"checkpoint yet (latest size {cp.size}); retry after the next signing")
        if tree.levels[0][e.index] != leaf_hash(e.envelope):
            raise IntegrityError(f"event {e.event_id}: the stored leaf hash of index {e.index} is not the hash of its "
                                 "envelope (run `causelog verify`)")
        proofs[e.event_id] = {
            "index": e.index, "size": cp.size,
            "hashes": [base64.b64encode(h).decode() for h in tree.inclusion_proof(e.index, cp.size)],
            "checkpoint": names[e.log], "log": e.log,
        }
        lines.append(e.envelope)
    files = {
        "events.jsonl": b"".join(line + b"\n" for line in lines),
        "proofs.json": orjson.dumps(proofs, option=orjson.OPT_INDENT_2) + b"\n",
        "key.vkey": vkey.encode() + b"\n",
        "query.txt": query.encode() + b"\n",
        "README": README.format(checkpoint=" / ".join(sorted(names.values()))).encode(),
    }
    for p, (_, _, note) in logs.items():
        files[names[p]] = note.encode()
    return files


def write_pack(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write the files of a pack into ``directory`` (created; existing pack files replaced)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


@dataclass(frozen=True)
class PackResult:
    """What verify-pack found: events proven, with their checkpoints, and the problems."""

    proven: list[str]
    checkpoints: list[Checkpoint]
    problems: list[str]
    key: str


def verify_pack(directory: Path, trusted: Sequence[Verifier] = ()) -> PackResult:
    """Check a pack offline: every checkpoint's signature (by ``key.vkey``, which must be one of
    ``trusted`` when given), and every event's inclusion proof against it."""
    try:
        vkey = (directory / "key.vkey").read_text().strip().splitlines()[0]
        proofs = orjson.loads((directory / "proofs.json").read_bytes())
        lines = (directory / "events.jsonl").read_bytes().split(b"\n")
    except (OSError, IndexError, orjson.JSONDecodeError) as exc:
        raise IntegrityError(f"{directory} is not a readable evidence pack: {exc}") from None
    verifier = parse_vkey(vkey)
    if trusted and verifier not in trusted:
        raise IntegrityError(f"the pack's key {vkey} is not one of the trusted keys")
    if lines and lines[-1] == b"":
        lines.pop()
    problems: list[str] = []
    opened: dict[str, Checkpoint] = {}
    proven: list[str] = []
    for number, line in enumerate(lines, 1):
        try:
            event_id = orjson.loads(line)["id"]
            entry = proofs[event_id]
            name = str(entry.get("checkpoint", "checkpoint"))
            if name not in opened:
                if "/" in name or name.startswith("."):
                    raise IntegrityError(f"bad checkpoint file name {name!r}")
                opened[name] = open_checkpoint((directory / name).read_text(), [verifier])
            cp = opened[name]
            if int(entry["size"]) != cp.size:
                raise IntegrityError(f"proof is for size {entry['size']}, checkpoint {name} has size {cp.size}")
            hashes = [base64.b64decode(h, validate=True) for h in entry["hashes"]]
            verify_inclusion(int(entry["index"]), cp.size, leaf_hash(line), hashes, cp.root)
            proven.append(event_id)
        except (IntegrityError, KeyError, TypeError, ValueError, OSError, binascii.Error) as exc:
            problems.append(f"events.jsonl line {number}: {type(exc).__name__ if isinstance(exc, KeyError) else ''}"
                            f"{exc}")
    missing = set(proofs) - set(proven) - _ids(lines)
    problems.extend(f"proofs.json names event {i} that is not in events.jsonl" for i in sorted(missing))
    return PackResult(proven, list(opened.values()), problems, vkey)


def _ids(lines: Sequence[bytes]) -> set[str]:
    out = set()
    for line in lines:
        try:
            out.add(orjson.loads(line)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return out
