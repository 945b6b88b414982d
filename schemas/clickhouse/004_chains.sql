-- Causal chains as the worker's correlation writes them (DESIGN.md §3).
-- events.chain_id holds the chain an event joined when it arrived (chain_time: that chain's head
-- time); chain_aliases says which chains were merged into which (resolve transitively); chain_edges holds the typed causal
-- edges, each event pointing to its predecessor on a shared link key.

-- "Which events are in chain X": chain ids are scattered over time order, so a bloom filter on
-- the column skips the granules that cannot hold them.
ALTER TABLE {database}.events ADD INDEX IF NOT EXISTS idx_chain chain_id TYPE bloom_filter(0.001) GRANULARITY 1;

-- The time of the chain's head (its earliest event) when the event joined: no member of a chain
-- is older than its head, so "events of chain X" can skip everything before it.
ALTER TABLE {database}.events ADD COLUMN IF NOT EXISTS chain_time DateTime64(6, 'UTC') DEFAULT 0 AFTER chain_id;

-- Rows may repeat (a worker restarted from its last snapshot writes the same rows again);
-- readers collapse them (v_chain_edges, pipeline/store/queries.py).
CREATE TABLE IF NOT EXISTS {database}.chain_edges
(
    scope      LowCardinality(String),
    key        String,
    key_type   LowCardinality(String),
    from_event String,
    to_event   String,
    time       DateTime64(6, 'UTC'),
    removed    Bool,
    INDEX idx_to to_event TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = MergeTree
ORDER BY (from_event, key, to_event)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.chain_aliases
(
    scope         LowCardinality(String),
    old_chain_id  String,
    new_chain_id  String,
    new_head_time DateTime64(6, 'UTC'),
    event_id      String,
    time          DateTime64(6, 'UTC'),
    -- Readers walk aliases both ways: by old id (the sort key) and by new id (this projection).
    PROJECTION by_new (SELECT * ORDER BY new_chain_id)
)
ENGINE = MergeTree
ORDER BY (old_chain_id)
-- Lookups fetch a handful of random ids: small granules read less per id.
SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 256;

-- Live causal edges (retracted ones removed, repeats collapsed) with both ends' types and times.
CREATE VIEW IF NOT EXISTS {database}.v_chain_edges AS
SELECT ed.key AS key, ed.key_type AS key_type,
       ed.from_event AS from_event, f.type AS from_type, f.time AS from_time,
       ed.to_event AS to_event, t.type AS to_type, t.time AS to_time,
       f.chain_id AS from_chain, ed.scope AS scope
FROM
(
    SELECT scope, key, key_type, from_event, to_event
    FROM {database}.chain_edges
    GROUP BY scope, key, key_type, from_event, to_event
    HAVING max(removed) = 0
) AS ed
LEFT JOIN {database}.events AS f ON f.id = ed.from_event
LEFT JOIN {database}.events AS t ON t.id = ed.to_event;

-- The current id of every chain that was merged into another: aliases followed to the end.
CREATE VIEW IF NOT EXISTS {database}.v_chain_roots AS
WITH RECURSIVE walk AS
(
    SELECT old_chain_id AS chain_id, new_chain_id AS root, 1 AS depth
    FROM (SELECT DISTINCT old_chain_id, new_chain_id FROM {database}.chain_aliases)
    UNION ALL
    SELECT w.chain_id AS chain_id, a.new_chain_id AS root, w.depth + 1 AS depth
    FROM walk AS w
    INNER JOIN (SELECT DISTINCT old_chain_id, new_chain_id FROM {database}.chain_aliases) AS a
        ON a.old_chain_id = w.root
)
SELECT chain_id, argMax(root, depth) AS root
FROM walk
GROUP BY chain_id;

-- Every event with the current id of its chain (for SQL; `causelog chain` does the same).
CREATE VIEW IF NOT EXISTS {database}.v_event_chains AS
SELECT e.id AS id, e.time AS time, e.type AS type, e.scope AS scope,
       if(r.root != '', r.root, e.chain_id) AS chain_id
FROM {database}.events AS e
LEFT JOIN {database}.v_chain_roots AS r ON r.chain_id = e.chain_id;
