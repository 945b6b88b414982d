"""Real Kafka for integration tests: started once per session by deploy/kafka/kafka.sh.

With ``KAFKA_BOOTSTRAP`` set, that cluster is used and nothing is started. Every test gets its
own topic prefix, consumer group, API port and CAUSELOG_HOME (so its own chDB store). The
helpers and the fixtures live in ``kafka_stack`` (a uniquely named module: tests import it,
never ``conftest``), shared with tests/security.
"""

from __future__ import annotations

from kafka_stack import kafka_bootstrap, stack

__all__ = ["kafka_bootstrap", "stack"]
