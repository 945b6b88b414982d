-- Alerts of the rules engine (pipeline/rules): one row per alert id. The id is deterministic
-- (rule, group, window start, first event), so a replay or a restart writes the same rows again;
-- ReplacingMergeTree on the id collapses them on merge and readers take one row per id
-- (LIMIT 1 BY id), so duplicates are never visible before a merge either.
CREATE TABLE IF NOT EXISTS {database}.alerts
(
    id           String,
    rule_id      String,
    title        String,
    level        LowCardinality(String),
    kind         LowCardinality(String),
    time         DateTime64(6, 'UTC'),
    tags         Array(String),
    event_ids    Array(String),
    chain_id     String,
    person       String,
    group_json   String,
    window_start Nullable(DateTime64(6, 'UTC')),
    window_end   Nullable(DateTime64(6, 'UTC')),
    summary      String,
    inserted_at  DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(time)
ORDER BY (id)
SETTINGS index_granularity = 8192;

-- One row per delivery outcome of an alert at a notification receiver (notify.yaml).
CREATE TABLE IF NOT EXISTS {database}.alert_deliveries
(
    alert_id  String,
    receiver  LowCardinality(String),
    status    LowCardinality(String),
    attempts  UInt16,
    error     String,
    time      DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, receiver, time, status);
