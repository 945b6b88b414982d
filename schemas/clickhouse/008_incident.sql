-- Incident answers (issue 13). Columns computed by ClickHouse at insert (MATERIALIZED: the writer
-- never lists them; parts written before this migration compute them when read).

-- Every name an event's target answers to (pipeline/correlate/targets.py, target_forms): its id,
-- name and service, the last segment of an ARN or `kind/name` id, and `kind:segment`. `why`,
-- `timeline --target` and the API match a typed name with has()/hasAny(), served by the index.
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS target_names Array(String) MATERIALIZED
    arrayFilter(x -> x != '', arrayDistinct([
        target_id, target_name, toString(target_service),
        arrayElement(splitByRegexp('[/:]', target_id), -1),
        if(target_kind != '' AND target_id != '',
           concat(toString(target_kind), ':', arrayElement(splitByRegexp('[/:]', target_id), -1)), ''),
        if(target_kind != '' AND target_name != '', concat(toString(target_kind), ':', target_name), '')
    ]));
ALTER TABLE {database}.events ADD INDEX IF NOT EXISTS idx_target_names target_names TYPE bloom_filter(0.01) GRANULARITY 4;

-- The normalised database statement (never a literal) and whether the event carries a diff:
-- `why` groups repetitive events (same statement, same API call) in SQL without reading envelopes.
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS statement String MATERIALIZED
    JSONExtractString(envelope, 'raw', 'statement', 'normalized');
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS has_diff Bool MATERIALIZED
    JSONType(envelope, 'diff') NOT IN ('Null', 'Nothing');

-- Who opened each session: one row per event that issued session credentials (CloudTrail
-- AssumeRole*, GetFederationToken, GetSessionToken: `diff.session_issued`), with the session key
-- the issuing call was itself made with (`caller`, '' for a principal's own credentials). Filled
-- by a materialized view in the same insert as the event, so a late session start is visible as
-- soon as it is stored; `who PERSON` walks it (pipeline/store/queries.py, _on_behalf) instead of
-- reading envelopes. Rows may repeat after a retried insert: readers collapse them.
CREATE TABLE IF NOT EXISTS {database}.session_issuers
(
    session         String,
    caller          String,
    event_id        String,
    actor_id        String,
    actor_principal String,
    actor_assurance LowCardinality(String),
    action          LowCardinality(String),
    time            DateTime64(6, 'UTC'),
    scope           LowCardinality(String),
    INDEX idx_caller caller TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (session, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.session_issuers_mv TO {database}.session_issuers AS
SELECT JSONExtractString(envelope, 'diff', 'session_issued', 'session') AS session,
       arrayFirst(k -> startsWith(k, 'session:') AND k != session, links) AS caller,
       id AS event_id, actor_id, actor_principal, actor_assurance, action, time, scope
FROM {database}.events
WHERE startsWith(type, 'iam.') AND session != '';

-- Sessions issued before this migration.
INSERT INTO {database}.session_issuers
SELECT JSONExtractString(envelope, 'diff', 'session_issued', 'session') AS session,
       arrayFirst(k -> startsWith(k, 'session:') AND k != session, links) AS caller,
       id AS event_id, actor_id, actor_principal, actor_assurance, action, time, scope
FROM {database}.events
WHERE startsWith(type, 'iam.') AND session != '';
