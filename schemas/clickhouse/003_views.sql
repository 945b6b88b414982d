-- Views for SREs writing their own incident queries (see README, "SQL for incidents").

-- Every event in time order with the columns an incident timeline needs.
CREATE VIEW IF NOT EXISTS {database}.v_timeline AS
SELECT time, type, action, outcome, target_kind, target_id, target_service, target_environment,
       actor_id, actor_kind, actor_assurance, actor_verified, links, source, scope, id
FROM {database}.events
ORDER BY time, id;

-- One row per actor: how much, how risky, how well proven.
CREATE VIEW IF NOT EXISTS {database}.v_actor_activity AS
SELECT actor_id,
       any(actor_display) AS display,
       groupUniqArray(actor_principal) AS principals,
       count() AS events,
       countIf(outcome = 'failure') AS failures,
       countIf(type LIKE 'access.%' OR type LIKE 'iam.%') AS access_changes,
       min(time) AS first_seen,
       max(time) AS last_seen,
       groupUniqArray(actor_assurance) AS assurances
FROM {database}.events
GROUP BY actor_id;

-- Link keys shared by more than one event: the raw material of chains.
CREATE VIEW IF NOT EXISTS {database}.v_link_groups AS
SELECT key, key_type, count() AS events, min(time) AS first, max(time) AS last, groupArray(event_id) AS event_ids
FROM {database}.event_links
GROUP BY key, key_type
HAVING events > 1;
