"""The consume-transform-produce loop of pipeline.bus.relay over an in-memory fake of confluent-kafka.

Checks what the real-broker test cannot provoke: an abortable commit failure is aborted, the
batch read again from the committed offsets and relayed exactly once; a fatal error stops the
relay with a BusError and nothing of the open transaction committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.bus import relay as relay_mod
from pipeline.errors import BusError, DecodeError
from pipeline.model import Event, decode
from pipeline.settings import load
from pipeline.sources import debezium

TOPIC = "pg1.public.orders"


class _Msg:
    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._t, self._p, self._o, self._k, self._v = topic, partition, offset, key, value

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def error(self) -> None:
        return None


class _Meta:
    def __init__(self, partitions: list[int]) -> None:
        self.error = None
        self.partitions = dict.fromkeys(partitions)


class Broker:
    """Input log, committed group offsets and the committed output of the fake cluster."""

    def __init__(self, logs: dict[int, list[tuple[bytes | None, bytes | None]]]) -> None:
        self.logs = logs
        self.offsets: dict[tuple[str, int], int] = {}
        self.output: list[tuple[str, bytes, bytes, Any]] = []
        self.commit_failures: list[KafkaError] = []
        self.aborts = 0


class FakeConsumer:
    broker: Broker

    def __init__(self, conf: dict[str, Any]) -> None:
        assert conf["isolation.level"] == "read_committed" and conf["enable.auto.commit"] is False
        self.pos: dict[tuple[str, int], int] = {}

    def list_topics(self, timeout: float = 0) -> Any:
        return type("MD", (), {"topics": {TOPIC: _Meta(sorted(self.broker.logs))}})()

    def committed(self, parts: list[TopicPartition], timeout: float = 0) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.broker.offsets.get((tp.topic, tp.partition), -1001))
                for tp in parts]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0) -> tuple[int, int]:
        return 0, len(self.broker.logs[tp.partition])

    def assign(self, parts: list[TopicPartition]) -> None:
        for tp in parts:
            self.pos[(tp.topic, tp.partition)] = max(tp.offset, 0)

    def seek(self, tp: TopicPartition) -> None:
        self.pos[(tp.topic, tp.partition)] = tp.offset

    def consume(self, n: int, timeout: float) -> list[_Msg]:
        out: list[_Msg] = []
        for (t, p), o in sorted(self.pos.items()):
            log = self.broker.logs[p]
            while o < len(log) and len(out) < n:
                out.append(_Msg(t, p, o, *log[o]))
                o += 1
            self.pos[(t, p)] = o
        return out

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.pos[(tp.topic, tp.partition)]) for tp in parts]

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def close(self) -> None:
        pass


class FakeProducer:
    broker: Broker

    def __init__(self, conf: dict[str, Any]) -> None:
        assert conf["transactional.id"].startswith("causelog-relay-")
        self.pending: list[tuple[str, bytes, bytes, Any]] = []
        self.pending_offsets: list[TopicPartition] = []

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        self.pending, self.pending_offsets = [], []

    def produce(self, topic: str, value: bytes, key: bytes, headers: Any = None, on_delivery: Any = None) -> None:
        self.pending.append((topic, value, key, headers))

    def poll(self, timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], meta: Any, timeout: float) -> None:
        assert meta == "group-metadata"
        self.pending_offsets = offsets

    def commit_transaction(self, timeout: float) -> None:
        if self.broker.commit_failures:
            raise KafkaException(self.broker.commit_failures.pop(0))
        self.broker.output.extend(self.pending)
        for tp in self.pending_offsets:
            self.broker.offsets[(tp.topic, tp.partition)] = tp.offset

    def abort_transaction(self, timeout: float) -> None:
        self.broker.aborts += 1
        self.pending = []


def _row(i: int) -> bytes:
    return orjson.dumps({
        "op": "c", "before": None, "after": {"id": i}, "ts_ms": 1_764_000_000_000,
        "source": {"connector": "postgresql", "name": "pg1", "ts_ms": 1_764_000_000_000, "db": "shop",
                   "schema": "public", "table": "orders", "txId": 7, "lsn": 100 + i},
    })


def _convert(value: bytes | None, topic: str, partition: int, offset: int, key: bytes | None) -> list[Event]:
    try:
        doc = None if value is None else orjson.loads(value)
    except orjson.JSONDecodeError:
        raise DecodeError("bad_json", "not JSON") from None
    return debezium.to_events(doc, scope="acme", topic=topic, server="pg1")


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    rows: list[tuple[bytes | None, bytes | None]] = [(None, _row(i)) for i in range(17)]
    bad: list[tuple[bytes | None, bytes | None]] = [(None, b"{bad")]
    tombstone: list[tuple[bytes | None, bytes | None]] = [(None, None)]
    logs = {0: rows[:10] + bad, 1: rows[10:] + tombstone}
    b = Broker(logs)
    FakeConsumer.broker = b
    FakeProducer.broker = b
    monkeypatch.setattr(relay_mod, "Consumer", FakeConsumer)
    monkeypatch.setattr(relay_mod, "Producer", FakeProducer)
    monkeypatch.setattr(relay_mod.time, "sleep", lambda s: None)
    yield b


def _settings() -> Any:
    return load({"CAUSELOG_TOPIC_PREFIX": "p", "KAFKA_BOOTSTRAP": "fake:9092"})


def test_relays_every_record_once_and_commits_offsets(broker: Broker) -> None:
    report = relay_mod.relay(_settings(), [TOPIC], "g", _convert, kind="debezium", batch=4)
    assert (report.records, report.events, report.rejected, report.reasons) == (19, 17, 1, {"bad_json": 1})
    changes = [o for o in broker.output if o[0] == "p.changes"]
    assert sorted(decode(v).diff["after"]["id"] for _, v, _, _ in changes) == sorted(  # type: ignore[index]
        debezium.to_events(orjson.loads(_row(i)), scope="acme", topic=TOPIC, server="pg1")[0].diff["after"]["id"]  # type: ignore[index]
        for i in range(17))
    assert {k for _, _, k, _ in changes} == {b"acme"}
    (dlq,) = [o for o in broker.output if o[0] == "p.dlq"]
    assert dlq[1] == b"{bad" and dlq[2] == f"debezium:{TOPIC}[0]@10".encode()
    headers = dict(dlq[3])
    assert headers["reason"] == b"bad_json" and headers["source"] == b"debezium"
    assert headers["origin"] == dlq[2]
    assert broker.offsets == {(TOPIC, 0): 11, (TOPIC, 1): 8}
    # a second run has nothing to do
    again = relay_mod.relay(_settings(), [TOPIC], "g", _convert, kind="debezium", batch=4)
    assert again.records == 0 and len(broker.output) == 18


def test_abortable_commit_failure_is_retried_from_the_committed_offsets(broker: Broker) -> None:
    broker.commit_failures = [
        KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True),
        KafkaError(KafkaError._TIMED_OUT, "retriable", retriable=True),
    ]
    report = relay_mod.relay(_settings(), [TOPIC], "g", _convert, kind="debezium", batch=5)
    assert broker.aborts == 2
    assert (report.records, report.events, report.rejected) == (19, 17, 1)
    ids = [decode(v).id for t, v, _, _ in broker.output if t == "p.changes"]
    assert len(ids) == len(set(ids)) == 17
    assert broker.offsets == {(TOPIC, 0): 11, (TOPIC, 1): 8}


def test_fatal_error_stops_with_bus_error_and_commits_nothing(broker: Broker) -> None:
    broker.commit_failures = [KafkaError(KafkaError._FENCED, "fenced", fatal=True)]
    with pytest.raises(BusError, match="restart to resume"):
        relay_mod.relay(_settings(), [TOPIC], "g", _convert, kind="debezium", batch=5)
    assert broker.output == [] and broker.offsets == {} and broker.aborts == 1


def test_transactional_id_is_stable_per_prefix_group_and_topic_set() -> None:
    s = _settings()
    assert relay_mod.transactional_id(s, "g", ["b", "a"]) == relay_mod.transactional_id(s, "g", ["a", "b", "a"])
    assert relay_mod.transactional_id(s, "g", ["a"]) != relay_mod.transactional_id(s, "h", ["a"])
