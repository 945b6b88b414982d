"""The deployment's hash key file (pipeline/hashkey.py): created once, private, shared on request."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest
from keyed_helpers import TEST_HASH_KEY

from pipeline.errors import ConfigError
from pipeline.hashkey import install, load_hasher
from pipeline.settings import load
from pipeline.sources import keyed


def _settings(home: Path, key_file: Path | None = None):  # type: ignore[no-untyped-def]
    env = {"CAUSELOG_HOME": str(home)}
    if key_file is not None:
        env["CAUSELOG_HASH_KEY_FILE"] = str(key_file)
    return load(env)


def test_first_use_creates_a_private_random_key_in_home_and_later_uses_read_it(tmp_path: Path) -> None:
    s = _settings(tmp_path / "home")
    assert s.hash_key_path == tmp_path / "home" / "hash.key"
    first = load_hasher(s)
    path = s.hash_key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert len(text.strip()) == 64 and bytes.fromhex(text.strip()) == first.key
    assert load_hasher(s).key == first.key  # not replaced
    assert load_hasher(_settings(tmp_path / "other")).key != first.key  # another deployment
    assert [p.name for p in path.parent.iterdir()] == ["hash.key"]  # no temporary file left


def _load(home: str) -> str:
    return load_hasher(load({"CAUSELOG_HOME": home})).key.hex()


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_load, [str(tmp_path)] * 8)
    assert len(set(keys)) == 1 and (tmp_path / "hash.key").read_text().strip() == keys[0]


def test_a_shared_key_file_is_used_as_is_and_never_created(tmp_path: Path) -> None:
    shared = tmp_path / "shared.key"
    with pytest.raises(ConfigError, match="CAUSELOG_HASH_KEY_FILE=.*does not exist"):
        load_hasher(_settings(tmp_path / "a", shared))
    shared.write_text(TEST_HASH_KEY.hex() + "\n")
    shared.chmod(0o600)
    host_a, host_b = load_hasher(_settings(tmp_path / "a", shared)), load_hasher(_settings(tmp_path / "b", shared))
    assert host_a.key == host_b.key == TEST_HASH_KEY
    assert not (tmp_path / "a" / "hash.key").exists()


@pytest.mark.parametrize(
    ("content", "mode", "error"),
    [
        ("00" * 32 + "\n", 0o644, "mode 0644 is open to others; chmod 600 it"),
        ("00" * 32 + "\n", 0o620, "mode 0620"),
        ("not a key\n", 0o600, "expected 64 hex digits"),
        ("ab" * 16 + "\n", 0o600, "expected 64 hex digits"),
    ],
)
def test_an_unsafe_or_malformed_key_file_is_refused_with_its_path(
    tmp_path: Path, content: str, mode: int, error: str
) -> None:
    path = tmp_path / "hash.key"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=error) as info:
        load_hasher(_settings(tmp_path))
    assert str(path) in str(info.value) and content.strip() not in str(info.value)


def test_install_hands_the_key_to_the_normalizers(tmp_path: Path) -> None:
    try:
        hasher = install(_settings(tmp_path))
        assert keyed.current() is hasher and hasher.key != TEST_HASH_KEY
    finally:
        keyed.use(keyed.Hasher(TEST_HASH_KEY))
