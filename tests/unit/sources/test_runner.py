"""The source runner and file fetchers, with an in-memory sink (no Kafka)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson
import pytest
from factories import event_dict

from pipeline.errors import DecodeError, SourceError
from pipeline.model import decode, decode_dict
from pipeline.sources import files
from pipeline.sources.runner import RawRecord, load_cursor, run_source


class MemorySink:
    """Records what a transactional sink would make visible, commit by commit."""

    def __init__(self) -> None:
        self.open: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.visible: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.cursors: list[bytes] = []

    def send(self, topic, value, key, headers=()):  # type: ignore[no-untyped-def]
        self.open.append((topic, value, key, list(headers)))

    def commit(self, cursor: bytes) -> None:
        self.visible.extend(self.open)
        self.open = []
        self.cursors.append(cursor)

    def last_cursor(self) -> bytes | None:
        return self.cursors[-1] if self.cursors else None


def _records(n: int, bad: set[int] = frozenset()) -> list[RawRecord]:  # type: ignore[assignment]
    out = []
    for i in range(n):
        body = b"{broken" if i in bad else orjson.dumps(event_dict(i))
        out.append(RawRecord(payload=body, cursor={"n": i + 1}, origin=f"mem:{i + 1}", original=body))
    return out


def _convert(rec: RawRecord) -> list:  # type: ignore[type-arg]
    try:
        obj = orjson.loads(rec.payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("bad_json", str(exc)) from None
    return [decode_dict(obj)]


def test_chunks_commit_events_with_the_cursor_of_their_last_record() -> None:
    sink = MemorySink()
    report = run_source("mem", _records(1234), _convert, sink, topic="t.changes", dlq="t.dlq",
                        chunk_records=500, chunk_seconds=3600)
    assert (report.records, report.events, report.rejected, report.commits) == (1234, 1234, 0, 3)
    assert [orjson.loads(c) for c in sink.cursors] == [{"n": 500}, {"n": 1000}, {"n": 1234}]
    assert sink.open == []
    assert [decode(v).id for _, v, _, _ in sink.visible] == [event_dict(i)["id"] for i in range(1234)]
    assert all(k == b"acme" and t == "t.changes" for t, _, k, _ in sink.visible)
    assert all(decode(v).observed_time is not None for _, v, _, _ in sink.visible)
    assert load_cursor(sink) == {"n": 1234}


def test_bad_records_go_to_the_dlq_and_the_run_goes_on() -> None:
    sink = MemorySink()
    report = run_source("mem", _records(50, bad={3, 40}), _convert, sink, topic="c", dlq="d", chunk_records=10)
    assert (report.events, report.rejected, report.reasons) == (48, 2, {"bad_json": 2})
    dlq = [(k, v, dict(h)) for t, v, k, h in sink.visible if t == "d"]
    assert [k for k, _, _ in dlq] == [b"mem:mem:4", b"mem:mem:41"]
    assert all(v == b"{broken" and h["reason"] == b"bad_json" and h["error"] for _, v, h in dlq)


def test_a_crash_inside_a_chunk_makes_nothing_of_it_visible() -> None:
    sink = MemorySink()

    def crash_at_700(rec: RawRecord) -> list:  # type: ignore[type-arg]
        if rec.cursor["n"] == 700:
            raise RuntimeError("killed")
        return _convert(rec)

    with pytest.raises(RuntimeError):
        run_source("mem", _records(1000), crash_at_700, sink, topic="c", dlq="d", chunk_records=500,
                   chunk_seconds=3600)
    assert len(sink.visible) == 500 and load_cursor(sink) == {"n": 500}
    # Resuming after the cursor completes the input exactly once.
    sink.open = []
    rest = [r for r in _records(1000) if r.cursor["n"] > load_cursor(sink)["n"]]
    run_source("mem", rest, _convert, sink, topic="c", dlq="d", chunk_records=500, chunk_seconds=3600)
    ids = [decode(v).id for _, v, _, _ in sink.visible]
    assert ids == [event_dict(i)["id"] for i in range(1000)]


def test_fetch_lines_resumes_skips_blanks_and_leaves_a_torn_last_line(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b'{"a":1}\n\n{"a":2}\n{"a":3')
    recs = list(files.fetch_lines(log))
    assert [r.payload for r in recs] == [b'{"a":1}', b'{"a":2}']
    assert [r.origin for r in recs] == [f"{log}:1", f"{log}:3"]
    with log.open("ab") as fh:
        fh.write(b'}\n{"a":4}\n')
    more = list(files.fetch_lines(log, recs[-1].cursor))
    assert [r.payload for r in more] == [b'{"a":3}', b'{"a":4}']
    assert more[-1].origin == f"{log}:5"
    assert list(files.fetch_lines(log, more[-1].cursor)) == []


def test_fetch_lines_starts_over_after_rotation_or_truncation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\n")
    cursor = list(files.fetch_lines(log))[-1].cursor
    os.rename(log, tmp_path / "a.log.1")
    log.write_bytes(b"three\n")
    assert [r.payload for r in files.fetch_lines(log, cursor)] == [b"three"]
    cursor = list(files.fetch_lines(log))[-1].cursor
    log.write_bytes(b"")  # truncated in place (same inode, shorter)
    assert list(files.fetch_lines(log, cursor)) == []
    with pytest.raises(SourceError, match="no such file"):
        list(files.fetch_lines(tmp_path / "missing.log"))


def test_fetch_documents_walks_trees_in_order_resumes_and_gunzips(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.json").write_bytes(b'{"n":1}')
    (tmp_path / "b" / "c.json.gz").write_bytes(gzip.compress(b'{"n":2}'))
    (tmp_path / "b" / "notes.txt").write_text("ignored")
    docs = list(files.fetch_documents([tmp_path]))
    assert [d.payload for d in docs] == [b'{"n":1}', b'{"n":2}']
    assert list(files.fetch_documents([tmp_path], docs[0].cursor))[0].payload == b'{"n":2}'
    assert list(files.fetch_documents([tmp_path], docs[1].cursor)) == []
    with pytest.raises(SourceError):
        list(files.fetch_documents([tmp_path / "nope"]))


def test_fetch_tree_reads_lines_or_whole_documents_recursively_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.log").write_bytes(b'{"n":1}\n\n{"n":2}\n')
    (tmp_path / "b" / "pretty.json").write_bytes(b'{\n  "n": 3\n}\n')
    (tmp_path / "b" / "z.jsonl.gz").write_bytes(gzip.compress(b'{"n":4}\n{"n":5}'))
    (tmp_path / "b" / "notes.txt").write_bytes(b"not read")
    recs = list(files.fetch_tree([tmp_path]))
    assert [orjson.loads(r.payload)["n"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[1].origin == f"{tmp_path / 'a.log'}:3" and recs[2].origin == str(tmp_path / "b" / "pretty.json")
    for n, rec in enumerate(recs):  # resuming after any record yields exactly the rest
        assert [r.payload for r in files.fetch_tree([tmp_path], rec.cursor)] == [r.payload for r in recs[n + 1:]]
    with pytest.raises(SourceError, match="nope"):
        list(files.fetch_tree([tmp_path / "nope"]))
