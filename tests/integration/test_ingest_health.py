"""The ingest loop never dies silently (issue 14): a bug while handling a batch stops the loop
with the cause logged and handed to ``abort`` (the worker exits 75), and ``health()`` — what
``GET /health`` and ``causelog status`` report — says the loop is not running."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from factories import event_bytes
from kafka_stack import Stack

from pipeline.stream.consumer import BatchConsumer
from pipeline.stream.ingest import BatchHandler, Counters, Record

pytestmark = pytest.mark.integration


class BuggyHandler(BatchHandler):
    """Raises what the old codec raised on a 10,000-deep record, outside any per-record guard."""

    def __init__(self) -> None:
        self.correlation = None
        self.counters = Counters()

    def prepare(self, records: Sequence[Record]) -> object:  # type: ignore[override]
        raise RecursionError("maximum recursion depth exceeded while deserializing an object")


def test_a_bug_in_the_batch_step_stops_the_loop_loudly_and_health_says_so(stack: Stack) -> None:
    stack.produce([event_bytes(i) for i in range(10)])
    aborted: list[str] = []
    done = threading.Event()

    def abort(reason: str) -> None:
        aborted.append(reason)
        done.set()

    consumer = BatchConsumer(stack.settings, BuggyHandler(), abort=abort)
    assert consumer.health() == []
    consumer.start()
    assert done.wait(60), "the loop never reported its failure"
    consumer._thread.join(10)
    assert "RecursionError" in aborted[0]
    problems = consumer.health()
    assert problems and "ingest loop stopped" in problems[0] and "RecursionError" in problems[0]


def test_health_reports_a_kafka_outage_while_retrying(stack: Stack) -> None:
    from dataclasses import replace

    dead = replace(stack.settings, kafka_bootstrap="127.0.0.1:1")
    aborted: list[str] = []
    consumer = BatchConsumer(dead, BuggyHandler(), abort=aborted.append)
    consumer._rewind(RuntimeError("broker gone"))
    problems = consumer.health()
    assert problems and "ingest paused" in problems[0] and "broker gone" in problems[0]
    assert not aborted
