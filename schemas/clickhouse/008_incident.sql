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
