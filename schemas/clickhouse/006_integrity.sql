-- Tamper evidence (DESIGN.md §6, README "Tamper evidence"): every stored event's place in the
-- append-only log of its input partition, and the signed checkpoints of those logs.

-- log_index: 0, 1, 2, ... per kafka_partition in offset order; -1 for rows in no log (stored
-- before this migration). leaf_hash: SHA-256(0x00 || envelope), the RFC 6962 leaf.
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS log_index Int64 DEFAULT -1;
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS leaf_hash FixedString(32) DEFAULT '';

-- Signed checkpoints (C2SP tlog-checkpoint as a signed note), one row per signing. Plain
-- MergeTree, never collapsed: a second, different checkpoint of the same size must stay visible
-- to `causelog verify`. Identical rows (re-signed after a crash) are collapsed by readers.
CREATE TABLE IF NOT EXISTS {database}.checkpoints
(
    origin    String,
    topic     LowCardinality(String),
    partition UInt32,
    size      UInt64,
    root      FixedString(32),
    note      String,
    key_name  String,
    signed_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, partition, size)
SETTINGS non_replicated_deduplication_window = 10000;

-- Ranges of a log removed by retention (`causelog prune`): verify reports them as pruned, not as
-- tampering. `leaves` keeps the leaf hashes of the removed rows (so the rest still proves against
-- the same checkpoints); `note` is the record signed with the checkpoint key, so a forged
-- "pruned" row cannot hide a deletion.
CREATE TABLE IF NOT EXISTS {database}.pruned
(
    topic       LowCardinality(String),
    partition   UInt32,
    first_index UInt64,
    last_index  UInt64,
    count       UInt64,
    reason      String,
    pruned_at   DateTime64(6, 'UTC'),
    leaves      Array(FixedString(32)),
    note        String
)
ENGINE = MergeTree
ORDER BY (topic, partition, first_index);

-- Legal holds: events whose target id or service matches are kept past retention.
CREATE TABLE IF NOT EXISTS {database}.holds
(
    id         String,
    target     String,
    reason     String,
    created_at DateTime64(6, 'UTC'),
    released   Bool DEFAULT false
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY id;
