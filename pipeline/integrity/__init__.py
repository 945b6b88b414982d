"""Tamper evidence (DESIGN.md §6), pure: RFC 6962 Merkle logs, C2SP signed notes and
checkpoints, the checks of ``causelog verify`` and evidence packs. No Kafka, Faust or ClickHouse."""
