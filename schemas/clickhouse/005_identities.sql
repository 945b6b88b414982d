-- Joins between principals learned from event data (pipeline/identity/learn.py): one row per
-- (pair, strength, system, rule, evidence event). The sort key is the whole join, so a join
-- written twice collapses on merge; readers GROUP BY it, so duplicates are never visible even
-- before a merge. Configured people (identities.yaml) are not stored here: the file is the
-- source of truth and is read at query time.
CREATE TABLE IF NOT EXISTS {database}.identities
(
    principal_a String,
    principal_b String,
    strength    LowCardinality(String),
    system      LowCardinality(String),
    rule        LowCardinality(String),
    event_id    String,
    learned_at  DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree
ORDER BY (principal_a, principal_b, strength, system, rule, event_id);
