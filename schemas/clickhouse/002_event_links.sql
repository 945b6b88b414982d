-- One row per (link key, event): the lookup table for session/trace/commit/deploy/change/request
-- queries. Filled by a materialized view so it lands in the same insert as the event row.
CREATE TABLE IF NOT EXISTS {database}.event_links
(
    key      String,
    key_type LowCardinality(String),
    event_id String,
    time     DateTime64(6, 'UTC'),
    scope    LowCardinality(String)
)
ENGINE = MergeTree
ORDER BY (key, time, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.event_links_mv TO {database}.event_links AS
SELECT
    arrayJoin(links) AS key,
    substring(key, 1, position(key, ':') - 1) AS key_type,
    id AS event_id,
    time,
    scope
FROM {database}.events;
