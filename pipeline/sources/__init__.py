"""Source normalizers: turn one record of an outside system into change-event envelopes.

Each source module splits into an I/O part (``fetch_*``: webhooks, files, APIs, cursors) and a
pure part (``to_events``) that maps one already-parsed record to a list of
:class:`pipeline.model.Event`. The pure parts never touch Kafka, Faust or ClickHouse, never read
the clock and never do I/O, so the same record always yields the same envelopes (same ids, same
bytes), which is what makes replays idempotent.

Shared building blocks:

- :mod:`pipeline.sources.redact` -- secret detection and hashing (``redacted:hmac-sha256:v1:<32 hex>``).
- :mod:`pipeline.sources.keyed` -- the keyed hash (HMAC-SHA256 under the deployment's key, which
  the I/O shells install; normalizers never read it themselves).
- :mod:`pipeline.sources.diff` -- structured before/after diffs with changed key paths.

Push sources without code: :mod:`~pipeline.sources.cloudevents` (CloudEvents 1.0 HTTP binding),
:mod:`~pipeline.sources.webhook_map` (declarative JMESPath mappings of any JSON webhook), both
authenticated by :mod:`~pipeline.sources.http_auth`. Connectors outside causelog use the public
API :mod:`pipeline.connect`.

Normalizers: :mod:`~pipeline.sources.github` (webhook payloads),
:mod:`~pipeline.sources.k8s_audit` (Kubernetes API-server audit events) and
:mod:`~pipeline.sources.terraform` (``terraform show -json`` plans).
"""
