"""`causelog ingest postgres-log DIR --follow` tails a csvlog directory through rotation, exactly once.

The test plays the server: it appends csvlog rows to a file (one of them written in two parts,
the first without its end, one spanning lines), rotates to a new file, appends more, while the
source follows the directory. Then the source is stopped with SIGTERM and every record's event
is in Kafka (read_committed) exactly once.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka_stack import Stack

from pipeline.sources import postgres_log as pg

pytestmark = pytest.mark.integration

FIXTURE = Path("/work/shared/data/database/pgbadger-fixtures/csv_statement_without_duration.log")
SERVER = "pg1"


def _rows(start: int, n: int) -> list[bytes]:
    """csvlog rows shaped like the fixture's, each with its own session line and statement."""
    template = next(csv.reader(io.StringIO(FIXTURE.read_text(encoding="utf-8"))))
    out = []
    for i in range(start, start + n):
        row = list(template)
        row[6] = str(i)  # session_line_num
        row[13] = (
            f"statement: SELECT {i}\n  FROM t /* spans lines */" if i % 5 == 0 else f"statement: SELECT {i}"
        )
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(row)
        out.append(buf.getvalue().encode())
    return out


def _append(path: Path, data: bytes, mtime: int | None = None) -> None:
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
    if mtime is not None:
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


@pytest.mark.skipif(not FIXTURE.exists(), reason="pgbadger csvlog fixture absent")
def test_follow_directory_through_rotation_exactly_once(stack: Stack, tmp_path: Path) -> None:
    logdir = tmp_path / "pg_log"
    logdir.mkdir()
    first, second = logdir / "postgresql-2026-11-27_220000.csv", logdir / "postgresql-2026-11-27_230000.csv"
    (logdir / "postgresql-2026-11-27_220000.json").write_text("not read: --format csvlog reads *.csv\n")
    rows = _rows(1, 40)
    written: list[bytes] = []

    def write(path: Path, batch: list[bytes], mtime: int) -> None:
        _append(path, b"".join(batch), mtime)
        written.extend(batch)

    write(first, rows[:10], 1_000)
    errlog = (tmp_path / "source.err").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "ingest",
            "postgres-log",
            str(logdir),
            "--server",
            SERVER,
            "--format",
            "csvlog",
            "--follow",
        ],
        env=stack.env,
        stdout=subprocess.DEVNULL,
        stderr=errlog,
    )
    try:
        time.sleep(2.0)
        write(first, rows[10:20], 1_001)
        # a row written in two parts: its first part (no line end) must not be read as a record
        torn = rows[20]
        _append(first, torn[: len(torn) // 2], 1_002)
        time.sleep(1.5)
        _append(first, torn[len(torn) // 2 :], 1_003)
        written.append(torn)
        time.sleep(1.5)
        # rotation: the collector opens a new file; the old one is not written again
        write(second, rows[21:30], 2_000)
        time.sleep(1.5)
        write(second, rows[30:40], 2_001)

        expected = {
            e.id
            for r in pg.parse(b"".join(written).decode(), format="csvlog")
            for e in pg.to_events(r, scope="default", server=SERVER)
        }
        assert len(expected) == 40
        msgs = stack.read_topic(stack.settings.topic_changes, expected=len(expected), timeout=20)
        assert proc.poll() is None, (tmp_path / "source.err").read_text()
        assert len(msgs) >= len(expected), (
            f"{len(msgs)} events, stderr:\n{(tmp_path / 'source.err').read_text()}"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errlog.close()

    msgs = stack.read_topic(stack.settings.topic_changes, expected=len(expected), timeout=20)
    ids = Counter(orjson.loads(m.value())["id"] for m in msgs)
    assert max(ids.values()) == 1, f"repeated: {[i for i, n in ids.items() if n > 1][:5]}"
    assert set(ids) == expected, f"missing {len(expected - set(ids))}, extra {len(set(ids) - expected)}"
    # (a row read half-written would have given an event of another id: "extra" above)
    raws = [orjson.loads(m.value())["raw"] for m in msgs]
    assert sum(1 for raw in raws if raw["line_end"] > raw["line"]) == 8  # the rows spanning lines
    assert {raw["line"] for raw in raws} >= {1, 2}  # positions restart in the new file
