"""Signed notes and checkpoints, checked against the vectors of Go's sumdb/note tests."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pytest

from pipeline.errors import IntegrityError
from pipeline.integrity.checkpoint import Checkpoint, open_checkpoint, parse_body
from pipeline.integrity.keyfile import load_or_create, read_key
from pipeline.integrity.note import Signer, open_note, parse_note, parse_skey, parse_vkey, sign_note

# golang.org/x/mod/sumdb/note/note_test.go
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def test_go_vectors_sign_and_verify_identically() -> None:
    signer = parse_skey(GO_SKEY)
    assert signer.verifier.vkey == GO_VKEY
    assert signer.skey == GO_SKEY
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    assert open_note(GO_NOTE, [parse_vkey(GO_VKEY)]) == GO_TEXT


def test_key_hash_is_the_documented_formula() -> None:
    v = parse_vkey(GO_VKEY)
    want = hashlib.sha256(b"PeterNeumann\n\x01" + v.public_key).digest()[:4]
    assert v.hash == want == bytes.fromhex("c74f20a3")


@pytest.mark.parametrize("vkey", [
    "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong hash
    "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
    "PeterNeumann+c74f20a3",
])
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(IntegrityError):
        parse_vkey(vkey)


def test_forged_and_foreign_signatures_are_reported() -> None:
    v = parse_vkey(GO_VKEY)
    # One byte of the text changed: the known key's signature no longer verifies.
    with pytest.raises(IntegrityError, match="bad signature by key PeterNeumann"):
        open_note(GO_NOTE.replace("answer", "Answer"), [v])
    other = Signer.generate("PeterNeumann")  # same name, other key: a different key hash
    forged = sign_note(GO_TEXT, other)
    with pytest.raises(IntegrityError, match="not signed by a known key"):
        open_note(forged, [v])
    # A signature line whose signature bytes were replaced but keep the right key hash.
    sig = base64.b64decode(GO_NOTE.rsplit(" ", 1)[1])
    bad = GO_TEXT + "\n\u2014 PeterNeumann " + base64.b64encode(sig[:4] + bytes(64)).decode() + "\n"
    with pytest.raises(IntegrityError, match="bad signature"):
        open_note(bad, [v])
    with pytest.raises(IntegrityError):
        parse_note(GO_TEXT)


def test_checkpoint_body_round_trip_and_parse_errors() -> None:
    s = Signer.generate("causelog/test")
    cp = Checkpoint("causelog/test/0", 12, hashlib.sha256(b"r").digest())
    note = cp.sign(s)
    assert note.startswith(f"causelog/test/0\n12\n{base64.b64encode(cp.root).decode()}\n\n\u2014 causelog/test ")
    assert open_checkpoint(note, [s.verifier]) == cp
    for body in ("o\n012\n" + base64.b64encode(cp.root).decode() + "\n", "o\n1\nAAAA\n", "o\n1\n"):
        with pytest.raises(IntegrityError):
            parse_body(body)


def test_key_file_is_created_once_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "home" / "signing.key"
    signer, created = load_or_create(path, "causelog/x")
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created = load_or_create(path, "ignored")
    assert not created and again == signer == read_key(path)
    assert path.read_text().startswith("PRIVATE+KEY+causelog/x+")
    path.write_text("garbage")
    with pytest.raises(IntegrityError, match=str(path)):
        read_key(path)
    with pytest.raises(IntegrityError, match="no signing key"):
        read_key(tmp_path / "missing")
