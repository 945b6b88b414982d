"""Pure checks of one log and of packs, on hand-made rows and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import IntegrityError
from pipeline.integrity.audit import Row, StoredCheckpoint, audit_log
from pipeline.integrity.checkpoint import Checkpoint
from pipeline.integrity.merkle import Tree, leaf_hash
from pipeline.integrity.note import Signer
from pipeline.integrity.pack import PackEvent, make_pack, verify_pack, write_pack

KEY = Signer.generate("causelog/t")
DATA = [b'{"id":"e%d"}' % i for i in range(9)]
LEAVES = [leaf_hash(d) for d in DATA]
ROWS = [Row(i, f"e{i}", 10 + i, h, h) for i, h in enumerate(LEAVES)]


def stored(size: int, root: bytes | None = None, key: Signer = KEY) -> StoredCheckpoint:
    cp = Checkpoint("causelog/t/0", size, root or Tree(LEAVES).root(size))
    return StoredCheckpoint(cp.origin, cp.size, cp.root, cp.sign(key))


def test_consistent_checkpoints_pass_and_a_fork_is_inconsistent() -> None:
    report = audit_log(0, ROWS, [stored(3), stored(7), stored(9), stored(9)], [KEY.verifier])
    assert not report.findings and report.checkpoint == 9 and report.tail == 0
    fork = stored(7, leaf_hash(b"other"))
    kinds = [f.kind for f in audit_log(0, ROWS, [stored(7), fork], [KEY.verifier]).findings]
    assert "inconsistent" in kinds


def test_unlogged_rows_before_the_log_are_legacy_after_it_inserted() -> None:
    report = audit_log(0, ROWS, [stored(9)], [KEY.verifier], unlogged=[("old", 3), ("new", 15)])
    assert report.unlogged == 1
    assert [(f.kind, f.event_id) for f in report.findings] == [("inserted", "new")]


def test_checkpoint_row_that_differs_from_its_note() -> None:
    good = stored(9)
    lying = StoredCheckpoint(good.origin, 8, good.root, good.note)
    assert [f.kind for f in audit_log(0, ROWS, [lying], [KEY.verifier]).findings] == ["bad_signature"]


def test_pack_refuses_an_untrusted_key_and_uncovered_events(tmp_path: Path) -> None:
    tree = Tree(LEAVES)
    cp = Checkpoint("causelog/t/0", 9, tree.root())
    files = make_pack([PackEvent("e2", DATA[2], 0, 2)], {0: (tree, cp, cp.sign(KEY))}, KEY.verifier.vkey, "q")
    write_pack(tmp_path, files)
    assert verify_pack(tmp_path).proven == ["e2"]
    with pytest.raises(IntegrityError, match="not one of the trusted keys"):
        verify_pack(tmp_path, [Signer.generate("causelog/t").verifier])
    small = Checkpoint("causelog/t/0", 2, tree.root(2))
    with pytest.raises(IntegrityError, match="not covered by a signed checkpoint"):
        make_pack([PackEvent("e2", DATA[2], 0, 2)], {0: (tree, small, small.sign(KEY))}, KEY.verifier.vkey, "q")
    (tmp_path / "checkpoint").write_text((tmp_path / "checkpoint").read_text().replace("\n9\n", "\n8\n"))
    assert verify_pack(tmp_path).problems
