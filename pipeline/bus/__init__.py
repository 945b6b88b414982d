"""Kafka plumbing over confluent-kafka: producers, topics, lag. Errors become ``BusError``."""

from pipeline.bus.kafka import (
    DeliveryTracker,
    consumer_lag,
    ensure_topics,
    make_producer,
    topic_specs,
    wait_for_broker,
)

__all__ = ["DeliveryTracker", "consumer_lag", "ensure_topics", "make_producer", "topic_specs", "wait_for_broker"]
