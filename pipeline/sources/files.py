"""File fetchers shared by the file-based sources (I/O only: reading, never converting).

Two shapes of input:
- line files (JSON lines, logs): :func:`fetch_lines` resumes at a byte offset and notices when
  the file was replaced (rotation) or truncated, starting it again from the top;
- document files (one JSON document each: a webhook payload, a plan, a CloudTrail delivery,
  ``.json.gz`` included): :func:`fetch_documents` walks files and directory trees in sorted
  order and resumes after the last file it finished;
- trees of exports that may hold either (a directory of audit logs, some JSON lines, some one
  pretty-printed document): :func:`fetch_tree` yields a file's lines, or the file whole when its
  first line is not a complete JSON value, and resumes at the file and line where it stopped.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import SourceError
from pipeline.sources.runner import RawRecord


def fetch_lines(path: Path, cursor: dict[str, Any] | None = None) -> Iterator[RawRecord]:
    """Yield each non-blank line of ``path`` after ``cursor`` as a record (payload: the bytes)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    offset, line_no = 0, 0
    if cursor and cursor.get("inode") == st.st_ino and cursor.get("offset", 0) <= st.st_size:
        offset, line_no = int(cursor["offset"]), int(cursor.get("line", 0))
    with path.open("rb") as fh:
        fh.seek(offset)
        while True:
            line = fh.readline()
            if not line:
                return
            if not line.endswith(b"\n") and fh.tell() == os.fstat(fh.fileno()).st_size:
                # A half-written last line: leave it for the next run instead of reading a torn record.
                return
            offset += len(line)
            line_no += 1
            text = line.strip()
            if not text:
                continue
            yield RawRecord(
                payload=text,
                cursor={"path": str(path), "inode": st.st_ino, "offset": offset, "line": line_no},
                origin=f"{path}:{line_no}",
                original=text,
            )


def _expand(paths: Sequence[Path], suffixes: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(f for f in p.rglob("*") if f.is_file() and f.name.endswith(suffixes))
        elif p.exists():
            files.append(p)
        else:
            raise SourceError(f"{p}: no such file or directory")
    return sorted(set(files))


def expand(paths: Sequence[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """``paths`` with directories replaced by their files (recursively) named ``*<suffix>``, sorted."""
    return _expand(paths, suffixes)


def unread_files(paths: Sequence[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """The files inside the directories of ``paths`` that :func:`expand` leaves out (for a source
    to report rather than skip in silence), sorted; hidden files and folders are not listed."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(f for f in p.rglob("*") if f.is_file() and not f.name.endswith(suffixes)
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
    return sorted(set(out))


def read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the name ends in .gz."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            # The converter reports unreadable input through the DLQ like any other bad record.
            return b"\x00gzip error: " + str(exc).encode()
    return data


# What a directory given to a line-based source holds: exports and logs, plain or gzipped.
TREE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".log", ".json.gz", ".jsonl.gz", ".ndjson.gz", ".log.gz")


def fetch_tree(
    paths: Sequence[Path], cursor: dict[str, Any] | None = None, *, suffixes: tuple[str, ...] = TREE_SUFFIXES
) -> Iterator[RawRecord]:
    """Every file of ``paths`` (directories walked recursively, in path order) after ``cursor``:
    one record per non-blank line, or one record for the whole file when its first non-blank
    line is not a complete JSON value (a pretty-printed document). The cursor names the file
    and the last line sent (``line`` -1: the whole file), so a rerun repeats nothing."""
    done_file = (cursor or {}).get("file")
    done_line = int((cursor or {}).get("line", 0))
    for f in _expand(paths, suffixes):
        name = str(f)
        skip = done_line if name == done_file else 0
        if (done_file is not None and name < done_file) or skip < 0:
            continue
        data = read_bytes(f)
        lines = data.splitlines()
        first = next((ln for ln in lines if ln.strip()), b"")
        if first and not _is_json(first):
            yield RawRecord(payload=data, cursor={"file": name, "line": -1}, origin=name, original=data)
            continue
        for n, line in enumerate(lines, 1):
            text = line.strip()
            if n <= skip or not text:
                continue
            yield RawRecord(payload=text, cursor={"file": name, "line": n}, origin=f"{name}:{n}", original=text)


def _is_json(line: bytes) -> bool:
    # Only decides how to split a file; the converter parses (and reports) every record itself.
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def fetch_documents(
    paths: Sequence[Path],
    cursor: dict[str, Any] | None = None,
    *,
    suffixes: tuple[str, ...] = (".json", ".json.gz"),
) -> Iterator[RawRecord]:
    """Yield one record per file (payload: the bytes), in path order, after ``cursor['after']``."""
    after = (cursor or {}).get("after")
    for f in _expand(paths, suffixes):
        if after is not None and str(f) <= after:
            continue
        data = read_bytes(f)
        yield RawRecord(payload=data, cursor={"after": str(f)}, origin=str(f), original=data)


def total_size(paths: Sequence[Path], suffixes: tuple[str, ...] = (".json", ".json.gz")) -> int:
    """Bytes to read, for progress bars."""
    return sum(f.stat().st_size for f in _expand(paths, suffixes))
