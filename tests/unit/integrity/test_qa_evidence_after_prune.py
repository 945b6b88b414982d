"""Evidence and `verify --log` after retention, on a real chDB store (found by walking the README
as a user): once `causelog prune` removed rows of a log, an evidence pack for an event that was
kept still proves against the same signed checkpoint (the pruned record's signed leaves stand in
for the removed rows); a log pruned whole still verifies; an unknown `--log` is a clear error."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from factories import BASE, event_dict
from test_store_verify import KEY, TOPIC, eid, mutate, tampered

from pipeline.errors import IntegrityError
from pipeline.integrity.note import Signer
from pipeline.integrity.pack import verify_pack, write_pack
from pipeline.integrity.retention import Policy, PrunedRun
from pipeline.store import Store
from pipeline.store.integrity import evidence, verify
from pipeline.store.retention import PRUNED_COLUMNS, add_hold, prune

NOW = BASE + timedelta(days=2)
EVERYTHING = Policy({"config.changed": timedelta(days=1)})


def test_evidence_of_a_kept_event_proves_after_the_rest_of_its_log_was_pruned(store: Store, tmp_path: Path) -> None:
    tampered(store)  # 12 events in log 0, signed checkpoints at sizes 6 and 12
    add_hold(store, event_dict(3)["target"]["id"], "incident 42", NOW)
    assert prune(store, TOPIC, EVERYTHING, KEY, NOW).removed == 11
    files = evidence(store, TOPIC, [eid(3)], [KEY.verifier], "causelog evidence ...")
    write_pack(tmp_path, files)
    result = verify_pack(tmp_path, [KEY.verifier])
    assert result.proven == [eid(3)] and not result.problems


def test_a_forged_pruned_record_does_not_fill_a_deleted_row_of_an_evidence_tree(store: Store) -> None:
    tampered(store)
    leaf = bytes(store.query(f"SELECT leaf_hash FROM {store.database}.events WHERE log_index = 5").rows[0][0])
    mutate(store, "ALTER TABLE {db}.events DELETE WHERE log_index = 5")
    run = PrunedRun(TOPIC, 0, 5, 5, (leaf,), "retention")
    store.insert("pruned", [[TOPIC, 0, 5, 5, 1, "retention", NOW, [leaf], run.sign(Signer.generate(KEY.name))]],
                 PRUNED_COLUMNS)
    with pytest.raises(IntegrityError, match="1 rows of the checkpointed tree are missing, the first at index 5"):
        evidence(store, TOPIC, [eid(3)], [KEY.verifier], "q")


def test_a_log_pruned_whole_verifies_and_an_unknown_log_is_named(store: Store) -> None:
    tampered(store)
    assert prune(store, TOPIC, EVERYTHING, KEY, NOW).removed == 12
    assert store.query(f"SELECT count() FROM {store.database}.events").rows == [[0]]
    for report in (verify(store, TOPIC, [KEY.verifier]), verify(store, TOPIC, [KEY.verifier], log=0)):
        assert report.ok, report.to_json()
        assert report.logs[0].pruned == [(0, 11)] and report.logs[0].checkpoint == 12
    with pytest.raises(IntegrityError, match=r"no log 7 in the store for causelog.changes \(logs: 0\)"):
        verify(store, TOPIC, [KEY.verifier], log=7)
