"""Connector signatures: a signing source's events pass the worker's decode step only with a
valid signature by its key; others go to the DLQ as bad_signature; unlisted sources need none."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from factories import event_dict

from pipeline.errors import ConfigError
from pipeline.integrity.note import Signer
from pipeline.integrity.sourcesig import load_source_keys, required_key, sign_event, source_signer
from pipeline.model import decode, encode
from pipeline.store import Position
from pipeline.stream.ingest import Record, split

KEY = Signer.generate("git-connector")
KEYS = {"causelog://test": KEY.verifier}


def rec(value: bytes, offset: int = 0) -> Record:
    return Record(value, Position("t", 0, offset))


def signed(i: int, signer: Signer = KEY) -> bytes:
    return encode(sign_event(decode(orjson.dumps(event_dict(i))), signer))


def test_signed_events_pass_and_bad_ones_are_rejected_with_the_reason() -> None:
    good = signed(1)
    assert b'"signature":"ed25519:' in good
    tampered = good.replace(b'"update"', b'"delete"')
    unsigned = orjson.dumps(event_dict(2))
    forged = signed(3, Signer.generate("git-connector"))
    ok, bad = split([rec(good, 0), rec(tampered, 1), rec(unsigned, 2), rec(forged, 3)], 1 << 20, KEYS)
    assert [p.position.offset for p in ok] == [0]
    assert [(r.record.position.offset, r.error.reason) for r in bad] == [(1, "bad_signature"), (2, "bad_signature"),
                                                                         (3, "bad_signature")]
    assert "has no ed25519 signature" in bad[1].error.message
    assert dict(bad[0].headers())["reason"] == b"bad_signature"
    # A source not listed needs no signature; without keys nothing is checked.
    other = orjson.dumps(event_dict(4, source="other"))
    assert len(split([rec(other)], 1 << 20, KEYS)[0]) == 1
    assert len(split([rec(tampered)], 1 << 20)[0]) == 1


def test_longest_prefix_wins_and_the_keys_file_is_checked(tmp_path: Path) -> None:
    k2 = Signer.generate("strict")
    keys = {"causelog://": KEY.verifier, "causelog://test": k2.verifier}
    assert required_key("causelog://test/x", keys) == k2.verifier
    assert required_key("causelog://git", keys) == KEY.verifier
    assert required_key("github://x", keys) is None
    f = tmp_path / "keys"
    f.write_text(f"# sources that sign\ncauselog://test {KEY.verifier.vkey}  # git\n\n")
    assert load_source_keys(f) == KEYS
    f.write_text("causelog://test\n")
    with pytest.raises(ConfigError, match=f"{f}:1"):
        load_source_keys(f)
    f.write_text("causelog://test nokey+00000000+AA==\n")
    with pytest.raises(ConfigError, match=f"{f}:1"):
        load_source_keys(f)


def test_source_signer_reads_the_key_file(tmp_path: Path) -> None:
    assert source_signer(None) is None
    (tmp_path / "k").write_text(KEY.skey + "\n")
    sign = source_signer(tmp_path / "k")
    assert sign is not None
    event = sign(decode(orjson.dumps(event_dict(5))))
    assert split([rec(encode(event))], 1 << 20, KEYS)[0]
