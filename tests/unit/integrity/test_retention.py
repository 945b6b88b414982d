"""Retention without breaking proofs: pruned rows are reported as pruned, the rest still proves
against the same checkpoints, holds keep events, and a forged pruned record does not hide a
deletion."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from factories import BASE, event_dict
from test_store_verify import KEY, TOPIC, check, eid, mutate, tampered

from pipeline.errors import ConfigError
from pipeline.integrity.note import Signer
from pipeline.integrity.retention import Policy, PrunedRun, load_policy, runs
from pipeline.store import Store
from pipeline.store.integrity import verify
from pipeline.store.retention import PRUNED_COLUMNS, add_hold, holds, prune, release_hold

NOW = BASE + timedelta(days=2)


def test_policy_file_and_runs(tmp_path: Path) -> None:
    assert load_policy(tmp_path / "missing") == Policy({})
    f = tmp_path / "retention.yaml"
    f.write_text("retention:\n  db.query: 90d\n  'access.*': 4w\n  access.admin: forever\n  default: 12h\n")
    p = load_policy(f)
    assert p.retention("db.query") == timedelta(days=90)
    assert p.retention("access.granted") == timedelta(weeks=4)
    assert p.retention("access.admin") is None
    assert p.retention("git.push") == timedelta(hours=12)
    f.write_text("retention:\n  db.query: soon\n")
    with pytest.raises(ConfigError, match="retention.db.query"):
        load_policy(f)
    assert runs([1, 2, 3, 5, 7, 8]) == [(1, 3), (5, 5), (7, 8)]


def test_pruned_rows_are_reported_as_pruned_and_holds_keep_events(store: Store) -> None:
    tampered(store)  # 12 events, checkpoints at 6 and 12
    hold = add_hold(store, event_dict(3)["target"]["id"], "incident 42", NOW)
    assert [h["id"] for h in holds(store)] == [hold]
    policy = Policy({"config.changed": timedelta(days=1)})
    dry = prune(store, TOPIC, policy, KEY, NOW, dry_run=True)
    assert dry.removed == 11 and dry.held == 1
    assert verify(store, TOPIC, [KEY.verifier]).ok  # a dry run changes nothing
    result = prune(store, TOPIC, policy, KEY, NOW)
    assert result.runs == [(0, 0, 2), (0, 4, 11)]
    assert store.query(f"SELECT id FROM {store.database}.events").rows == [[eid(3)]]
    v = verify(store, TOPIC, [KEY.verifier])
    assert v.ok, v.to_json()
    assert v.logs[0].pruned == [(0, 2), (4, 11)] and v.logs[0].checkpoint == 12
    assert "11 pruned by retention" in v.summary()
    # The held event is still proven; tampering with it is still found.
    mutate(store, f"ALTER TABLE {{db}}.events UPDATE envelope = concat(envelope, ' ') WHERE id = '{eid(3)}'")
    assert check(store)[:3] == ("modified", 3, eid(3))
    assert release_hold(store, hold, NOW) and not holds(store)


def test_a_forged_pruned_record_does_not_hide_a_deletion(store: Store) -> None:
    tampered(store)
    leaf = bytes(store.query(f"SELECT leaf_hash FROM {store.database}.events WHERE log_index = 5").rows[0][0])
    mutate(store, "ALTER TABLE {db}.events DELETE WHERE log_index = 5")
    run = PrunedRun(TOPIC, 0, 5, 5, (leaf,), "retention")
    store.insert("pruned", [[TOPIC, 0, 5, 5, 1, "retention", NOW, [leaf], run.sign(Signer.generate(KEY.name))]],
                 PRUNED_COLUMNS)
    kinds = {(f.kind, f.index) for f in verify(store, TOPIC, [KEY.verifier]).logs[0].findings}
    assert ("deleted", 5) in kinds and ("bad_signature", 5) in kinds
