"""When the worker's signer signs: a log that grew, at most every CAUSELOG_SIGN_SECONDS, all on
a forced round (stop, revocation); a failed publish is retried at the next round."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import BusError
from pipeline.integrity.checkpoint import Checkpoint, open_checkpoint
from pipeline.integrity.merkle import leaf_hash
from pipeline.integrity.note import Signer
from pipeline.settings import load
from pipeline.stream.signer import CheckpointSigner, write_file


class Recording(CheckpointSigner):
    def __init__(self, tmp_path: Path) -> None:
        self.now = 100.0
        super().__init__(load({"CAUSELOG_HOME": str(tmp_path), "CAUSELOG_SIGN_SECONDS": "10"}), None,  # type: ignore[arg-type]
                         Signer.generate("causelog/d"), "d", clock=lambda: self.now)
        self.published: list[tuple[int, Checkpoint, str]] = []
        self.fail = False

    def _publish(self, notes: list[tuple[int, Checkpoint, str]]) -> None:
        if self.fail:
            raise BusError("broker down")
        self.published.extend(notes)


def sizes(s: Recording) -> list[tuple[int, int]]:
    return [(p, cp.size) for p, cp, _ in s.published]


def test_signs_grown_logs_at_most_every_interval(tmp_path: Path) -> None:
    s = Recording(tmp_path)
    r = leaf_hash(b"r")
    s.committed({0: (0, r), 1: (3, r)})
    assert sizes(s) == [(1, 3)]  # an empty log is not signed
    s.now += 5
    s.committed({0: (2, r), 1: (4, r)})
    assert sizes(s) == [(1, 3), (0, 2)]  # log 0 never signed: due at once; log 1 signed 5 s ago
    s.now += 5
    s.committed({0: (2, r), 1: (4, r)})
    assert sizes(s)[-1] == (1, 4) and len(s.published) == 3  # log 0 did not grow
    s.committed({0: (3, r), 1: (5, r)}, force=True)
    assert sizes(s)[-2:] == [(0, 3), (1, 5)]
    _, cp, note = s.published[-1]
    assert cp.origin == "causelog/d/1" and open_checkpoint(note, [s.signer.verifier]) == cp


def test_failed_publish_is_retried_next_round(tmp_path: Path) -> None:
    s = Recording(tmp_path)
    s.fail = True
    assert s.committed({0: (1, leaf_hash(b"a"))}) == []
    s.fail = False
    assert [cp.size for cp in s.committed({0: (1, leaf_hash(b"a"))})] == [1]


def test_checkpoint_file_per_origin_and_size(tmp_path: Path) -> None:
    cp = Checkpoint("causelog/c1/p/g/2", 7, leaf_hash(b"x"))
    path = write_file(tmp_path, cp, "note\n")
    assert path == tmp_path / "causelog" / "c1" / "p" / "g" / "2" / "7"
    assert path.read_text() == "note\n" and [p.name for p in path.parent.iterdir()] == ["7"]


