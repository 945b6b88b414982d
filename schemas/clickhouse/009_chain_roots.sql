-- The current chain of every merged chain, resolved when the merge is written (issue 13,
-- DESIGN.md §8): `why` and `chain` find a chain's root, and every chain merged into a root, with
-- one lookup each instead of walking chain_aliases one level of merges per query.
--
-- One row says "chain_id is (transitively) part of root_id, whose head (earliest event) is at
-- root_time". When chains merge, the writer (pipeline/store/chain_roots.py) adds a row for the
-- merged chain and for every chain already merged into it, pointing at the new root. The
-- correlator always keeps the chain whose head (time, id) is earliest, so a chain's current
-- root is its row with the least (root_time, root_id): rows are only ever added, never updated,
-- and the answer does not depend on the order rows arrive in (late merges, replays). A chain
-- with no row was never merged: it is its own root. Rows may repeat; readers collapse them.
CREATE TABLE IF NOT EXISTS {database}.chain_roots
(
    scope     LowCardinality(String),
    chain_id  String,
    root_id   String,
    root_time DateTime64(6, 'UTC'),
    -- "Every chain merged into root X" reads by root.
    PROJECTION by_root (SELECT * ORDER BY root_id)
)
ENGINE = MergeTree
ORDER BY (chain_id)
-- Lookups fetch a handful of random ids: small granules read less per id.
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 256;

-- Merges stored before this migration: aliases followed to the end (v_chain_roots), with the
-- root's head time from the aliases into it.
INSERT INTO {database}.chain_roots (scope, chain_id, root_id, root_time)
SELECT a.scope, r.chain_id, r.root, h.head
FROM {database}.v_chain_roots AS r
INNER JOIN (SELECT new_chain_id, min(new_head_time) AS head FROM {database}.chain_aliases GROUP BY new_chain_id) AS h
    ON h.new_chain_id = r.root
INNER JOIN (SELECT old_chain_id, any(scope) AS scope FROM {database}.chain_aliases GROUP BY old_chain_id) AS a
    ON a.old_chain_id = r.chain_id;
