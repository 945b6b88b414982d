"""A second process on the same embedded store: chDB's lock on ``<path>/status`` is found in
/proc/locks and reported as one StoreError naming the path, the other process and CAUSELOG_HOME
(a QA walk saw ``causelog worker`` print chDB's raw "Cannot lock file" line and exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.errors import StoreError
from pipeline.settings import load
from pipeline.store.client import engine_holder, open_store


def _locks(path: Path, pid: int, *, kind: str = "FLOCK", waiter: bool = False) -> str:
    st = (path / "status").stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    arrow = " ->" if waiter else ""
    return (f"1: POSIX  ADVISORY  WRITE 999 00:01:1 0 EOF\n"
            f"2:{arrow} {kind}  ADVISORY  WRITE {pid} {dev} 0 EOF\n")


@pytest.fixture
def chdb_dir(tmp_path: Path) -> Path:
    path = tmp_path / "chdb"
    path.mkdir()
    (path / "status").write_text("PID: 1\n")
    return path


def test_another_process_holding_the_status_file_is_named(chdb_dir: Path, tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.write_text(_locks(chdb_dir, 4242))
    assert engine_holder(chdb_dir, locks) == 4242


@pytest.mark.parametrize("case", ["own pid", "waiter", "posix lock", "no status file"])
def test_no_holder_when_the_lock_is_ours_or_absent(chdb_dir: Path, tmp_path: Path, case: str) -> None:
    locks = tmp_path / "locks"
    locks.write_text(_locks(chdb_dir, os.getpid() if case == "own pid" else 4242,
                            kind="POSIX" if case == "posix lock" else "FLOCK", waiter=case == "waiter"))
    if case == "no status file":
        (chdb_dir / "status").unlink()
    assert engine_holder(chdb_dir, locks) is None


def test_open_store_says_which_process_holds_the_path(tmp_path: Path) -> None:
    """A real flock by another process (not chDB itself: the check reads the kernel's lock table)."""
    import subprocess
    import sys

    home = tmp_path / "home"
    (home / "chdb").mkdir(parents=True)
    (home / "chdb" / "status").write_text("")
    if not Path("/proc/locks").exists():
        pytest.skip("no /proc/locks on this system (the holder cannot be named)")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(home / "chdb" / "status")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        settings = load({"CAUSELOG_HOME": str(home)})
        with pytest.raises(StoreError) as caught:
            open_store(settings)
    finally:
        holder.kill()
        holder.wait()
    text = str(caught.value)
    assert "\n" not in text, text
    assert f"{home / 'chdb'} is already in use by another causelog worker" in text, text
    assert f"pid {holder.pid}" in text and f"CAUSELOG_HOME (now {home})" in text, text
