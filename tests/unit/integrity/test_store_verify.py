"""The writer's log indexes and leaf hashes, and `verify` / evidence packs on a real chDB store:
rows tampered with directly in the store are located by event id and index."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from factories import event_dict

from pipeline.errors import IntegrityError
from pipeline.integrity.checkpoint import Checkpoint
from pipeline.integrity.log import PartitionLog
from pipeline.integrity.merkle import Tree, leaf_hash
from pipeline.integrity.note import Signer, sign_note
from pipeline.integrity.pack import verify_pack, write_pack
from pipeline.model import decode
from pipeline.store import EventWriter, Pending, Position, Store
from pipeline.store.integrity import evidence, verify

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
TOPIC = "causelog.changes"
KEY = Signer.generate("causelog/unit")
COLUMNS = ["origin", "topic", "partition", "size", "root", "note", "key_name", "signed_at"]


def pending(i: int, offset: int, partition: int = 0) -> Pending:
    raw = orjson.dumps(event_dict(i))
    return Pending(decode(raw), raw, Position(TOPIC, partition, offset))


class Log:
    """A writer with the logs a worker would keep, and a signer of its checkpoints."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writer = EventWriter(store)
        self.logs: dict[int, PartitionLog] = {}

    def write(self, batch: list[Pending]) -> None:
        result = self.writer.write(batch, now=NOW, logs=self.logs)
        self.logs.update(result.logs)

    def sign(self, key: Signer = KEY) -> None:
        rows = []
        for p, log in sorted(self.logs.items()):
            cp = Checkpoint(f"causelog/unit/{p}", log.size, log.root())
            rows.append([cp.origin, TOPIC, p, cp.size, cp.root, cp.sign(key), key.name, NOW])
        self.store.insert("checkpoints", rows, COLUMNS)


def indexed(store: Store, partition: int = 0) -> list[tuple[int, str, bytes]]:
    cols = store.columns(f"SELECT log_index, id, leaf_hash FROM {store.database}.events "
                         f"WHERE kafka_partition = {partition} ORDER BY log_index")
    return list(zip(*cols, strict=True))


def test_stored_events_get_consecutive_indexes_in_offset_order_and_duplicates_none(store: Store) -> None:
    log = Log(store)
    log.write([pending(0, 0), pending(1, 1), pending(0, 2), pending(2, 3, partition=1)])  # offset 2 repeats id 0
    log.write([pending(1, 4), pending(3, 5), pending(4, 6, partition=1)])  # offset 4 repeats id 1
    rows = indexed(store)
    assert [(i, e) for i, e, _ in rows] == [(0, event_dict(0)["id"]), (1, event_dict(1)["id"]),
                                           (2, event_dict(3)["id"])]
    envelope = {event_dict(n)["id"]: orjson.dumps(event_dict(n)) for n in range(5)}
    assert all(h == leaf_hash(envelope[event_id]) for _, event_id, h in rows)
    assert [i for i, _, _ in indexed(store, 1)] == [0, 1]
    assert log.logs[0].size == 3 and log.logs[0].next_offset == 6
    tree = Tree([h for _, _, h in rows])
    assert log.logs[0].root() == tree.root()


def test_a_batch_replayed_after_a_crash_keeps_its_indexes(store: Store) -> None:
    log = Log(store)
    log.write([pending(i, i) for i in range(3)])
    committed = {p: lg.copy() for p, lg in log.logs.items()}
    log.write([pending(i, i) for i in range(3, 8)])  # stored, then the worker dies before committing
    first_rows, first_root = indexed(store), log.logs[0].root()
    # Restart: state as committed; the batch comes again, cut differently, with one more record.
    log.logs = committed
    log.write([pending(i, i) for i in range(3, 5)])
    log.write([pending(i, i) for i in range(5, 8)] + [pending(3, 8)])  # offset 8: duplicate of id 3
    assert indexed(store) == first_rows
    assert log.logs[0].root() == first_root and log.logs[0].size == 8


def tampered(store: Store, n: int = 12) -> Log:
    log = Log(store)
    log.write([pending(i, i) for i in range(n // 2)])
    log.sign()
    log.write([pending(i, i) for i in range(n // 2, n)])
    log.sign()
    return log


def check(store: Store) -> tuple[str, int | None, str | None, str]:
    result = verify(store, TOPIC, [KEY.verifier])
    assert not result.ok
    first = result.logs[0].first
    assert first is not None
    return first.kind, first.index, first.event_id, result.summary()


def mutate(store: Store, sql: str) -> None:
    store.command(sql.format(db=store.database) + " SETTINGS mutations_sync = 2")


def eid(i: int) -> str:
    return event_dict(i)["id"]


def test_an_untouched_store_verifies(store: Store) -> None:
    tampered(store)
    result = verify(store, TOPIC, [KEY.verifier])
    assert result.ok, result.to_json()
    assert result.summary().startswith("ok: 1 logs, 12 events; latest checkpoints (log@size): 0@12")


def test_modified_envelope_is_named(store: Store) -> None:
    tampered(store)
    mutate(store, f"ALTER TABLE {{db}}.events UPDATE envelope = replace(envelope, 'acme', 'evil') WHERE id = '{eid(4)}'")
    assert check(store)[:3] == ("modified", 4, eid(4))


def test_modified_envelope_with_its_hash_rewritten_is_located_by_the_checkpoint(store: Store) -> None:
    tampered(store)
    mutate(store, "ALTER TABLE {db}.events UPDATE envelope = replace(envelope, 'acme', 'evil'), "
                  f"leaf_hash = unhex(hex(SHA256(concat(char(0), replace(envelope, 'acme', 'evil'))))) WHERE id = '{eid(8)}'")
    kind, index, _, summary = check(store)
    assert (kind, index) == ("modified", 6)  # between checkpoint 6 (fine) and 12 (wrong root)
    assert "TAMPERED" in summary


def test_deleted_row_is_named(store: Store) -> None:
    tampered(store)
    mutate(store, f"ALTER TABLE {{db}}.events DELETE WHERE id = '{eid(5)}'")
    kind, index, _, _ = check(store)
    assert (kind, index) == ("deleted", 5)


def test_deleted_tail_is_named(store: Store) -> None:
    tampered(store)
    mutate(store, "ALTER TABLE {db}.events DELETE WHERE log_index >= 10")
    assert check(store)[:2] == ("deleted", 10)


def test_inserted_rows_are_named(store: Store) -> None:
    tampered(store)
    # A forged copy of row 3 claiming its index, and a row with no index at all.
    store.command(f"INSERT INTO {store.database}.events SELECT * REPLACE ('forged' AS id, kafka_offset + 100 AS kafka_offset) "
                  f"FROM (SELECT * FROM {store.database}.events WHERE log_index = 3)")
    assert check(store)[:3] == ("inserted", 3, "forged")


def test_inserted_row_without_index_is_named(store: Store) -> None:
    tampered(store)
    store.command(f"INSERT INTO {store.database}.events SELECT * REPLACE ('forged' AS id, -1 AS log_index, "
                  f"kafka_offset + 100 AS kafka_offset) FROM (SELECT * FROM {store.database}.events WHERE log_index = 3)")
    assert check(store)[:3] == ("inserted", None, "forged")


def test_reordered_rows_are_named(store: Store) -> None:
    tampered(store)
    mutate(store, "ALTER TABLE {db}.events UPDATE log_index = multiIf(log_index = 2, 7, log_index = 7, 2, log_index) "
                  "WHERE log_index IN (2, 7)")
    assert check(store)[:3] == ("reordered", 2, eid(7))


def test_forged_checkpoint_signature_is_reported(store: Store) -> None:
    log = tampered(store)
    log.sign(Signer.generate("causelog/unit"))  # someone else's key, same name
    result = verify(store, TOPIC, [KEY.verifier])
    assert [f.kind for f in result.logs[0].findings] == ["bad_signature"]
    assert "not signed by a known key" in result.logs[0].findings[0].detail
    # A checkpoint whose root was changed after signing.
    store.command(f"ALTER TABLE {store.database}.checkpoints DELETE WHERE key_name != '' SETTINGS mutations_sync = 2")
    cp = Checkpoint("causelog/unit/0", 12, leaf_hash(b"x"))
    note = sign_note(cp.body(), KEY).replace(base64.b64encode(cp.root).decode(), base64.b64encode(leaf_hash(b"y")).decode())
    store.insert("checkpoints", [[cp.origin, TOPIC, 0, 12, leaf_hash(b"y"), note, KEY.name, NOW]], COLUMNS)
    assert verify(store, TOPIC, [KEY.verifier]).logs[0].first.kind == "bad_signature"  # type: ignore[union-attr]


def test_evidence_pack_verifies_offline_and_fails_on_any_changed_byte(store: Store, tmp_path: Path) -> None:
    tampered(store, 20)
    ids = [eid(3), eid(17)]
    files = evidence(store, TOPIC, ids, [KEY.verifier], "causelog evidence ...")
    write_pack(tmp_path, files)
    result = verify_pack(tmp_path, [KEY.verifier])
    assert result.proven == ids and not result.problems
    proofs = orjson.loads(files["proofs.json"])
    assert proofs[eid(3)]["index"] == 3 and proofs[eid(3)]["size"] == 20
    events = files["events.jsonl"]
    for pos in (5, len(events) // 2, len(events) - 3):
        changed = bytearray(events)
        changed[pos] ^= 0x01
        (tmp_path / "events.jsonl").write_bytes(bytes(changed))
        assert verify_pack(tmp_path).problems, pos
    with pytest.raises(IntegrityError, match="no stored event"):
        evidence(store, TOPIC, ["nope"], [KEY.verifier], "q")


def test_log_and_since_narrow_what_is_checked(store: Store) -> None:
    log = tampered(store)
    log.write([pending(100 + i, i, partition=1) for i in range(3)])
    log.sign()
    assert [r.log for r in verify(store, TOPIC, [KEY.verifier]).logs] == [0, 1]
    assert [r.log for r in verify(store, TOPIC, [KEY.verifier], log=1).logs] == [1]
    mutate(store, f"ALTER TABLE {{db}}.events UPDATE envelope = replace(envelope, 'acme', 'evil') WHERE id = '{eid(4)}'")
    assert verify(store, TOPIC, [KEY.verifier], log=1).ok
    # Rows stored before --since keep their stored leaf hash: the rewrite goes unseen there...
    later = NOW.replace(year=2030)
    assert verify(store, TOPIC, [KEY.verifier], since=later).ok
    # ...and is found when they are recomputed.
    assert not verify(store, TOPIC, [KEY.verifier], since=NOW).ok
