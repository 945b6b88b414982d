-- Every change event, one row per event id. Ordered by (scope, time, id) so "what changed
-- before T" reads a contiguous range; bloom filters serve id, target and actor lookups.
CREATE TABLE IF NOT EXISTS {database}.events
(
    id                 String,
    scope              LowCardinality(String),
    type               LowCardinality(String),
    source             LowCardinality(String),
    time               DateTime64(6, 'UTC'),
    observed_time      DateTime64(6, 'UTC'),
    subject            String,
    actor_id           String,
    actor_display      String,
    actor_kind         LowCardinality(String),
    actor_principal    String,
    actor_verified     Bool,
    actor_assurance    LowCardinality(String),
    target_kind        LowCardinality(String),
    target_id          String,
    target_name        String,
    target_environment LowCardinality(String),
    target_service     LowCardinality(String),
    action             LowCardinality(String),
    outcome            LowCardinality(String),
    links              Array(String),
    source_seq         String,
    chain_id           String DEFAULT '',
    envelope           String CODEC(ZSTD(3)),
    kafka_topic        LowCardinality(String),
    kafka_partition    UInt32,
    kafka_offset       UInt64,
    ingested_at        DateTime64(6, 'UTC'),
    INDEX idx_id id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_target target_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_actor actor_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (scope, time, id)
-- A retried insert with the same dedup token (derived from Kafka offsets) is dropped.
SETTINGS non_replicated_deduplication_window = 10000;
