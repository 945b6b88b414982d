"""Keyed hashes (pipeline/sources/keyed.py): a stored hash gives nothing to a dictionary."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
from keyed_helpers import TEST_HASH_KEY, marker

from pipeline.errors import ConfigError
from pipeline.sources import keyed, pgsql, postgres_log
from pipeline.sources.redact import redact

DICTIONARY = ["123456", "password", "letmein", "hunter2", "qwerty", "trustno1"]


@pytest.fixture
def other_deployment() -> Iterator[keyed.Hasher]:
    """Installs a second deployment's key for one test, then the tests' key again."""
    other = keyed.Hasher(bytes(range(100, 132)))
    keyed.use(other)
    try:
        yield other
    finally:
        keyed.use(keyed.Hasher(TEST_HASH_KEY))


def test_a_plain_sha256_dictionary_no_longer_matches_a_stored_hunter2() -> None:
    stored = redact({"db_password": "hunter2"})["db_password"]
    digits = stored.rsplit(":", 1)[1]
    assert re.fullmatch(r"redacted:hmac-sha256:v1:[0-9a-f]{32}", stored)
    # The attack that worked on the former format: hash every guess, compare prefixes.
    for guess in DICTIONARY:
        plain = hashlib.sha256(guess.encode()).hexdigest()
        assert not plain.startswith(digits[:16]) and plain[:32] != digits
    # Only the key holder can confirm it.
    assert stored == marker("hunter2")


def test_the_same_statement_with_the_same_literal_is_not_confirmable_without_the_key() -> None:
    st = pgsql.analyze("UPDATE users SET pin = '1234' WHERE id = 7")
    for guess in ("0000", "1234", "9999"):
        text = f"UPDATE users SET pin = '{guess}' WHERE id = 7"
        assert hashlib.sha256(text.encode()).hexdigest()[:32] not in st.hash
    assert st.hash == keyed.Hasher(TEST_HASH_KEY).tag("UPDATE users SET pin = '1234' WHERE id = 7")


def test_one_key_gives_equal_hashes_two_deployments_give_different_ones(other_deployment: keyed.Hasher) -> None:
    ours = keyed.Hasher(TEST_HASH_KEY)
    assert ours.tag("hunter2") == keyed.Hasher(bytes(TEST_HASH_KEY)).tag("hunter2")
    assert ours.tag("hunter2") != other_deployment.tag("hunter2")
    # Through the normalizers: the installed key decides.
    theirs = redact({"password": "hunter2"})["password"]
    assert theirs == redact({"password": "hunter2"})["password"]  # stable within a deployment
    assert theirs == marker("hunter2", key=other_deployment.key) != marker("hunter2")


def test_postgres_ids_and_hashes_depend_on_the_deployment_key(other_deployment: keyed.Hasher) -> None:
    line = '2024-05-01 10:00:00.000 UTC,"alice","db",42,"127.0.0.1:5000",6630f5a0.2a,3,"UPDATE",' \
           '2024-05-01 10:00:00 UTC,3/7,0,LOG,00000,"statement: UPDATE t SET pin = \'1234\'",,,,,,,,,"psql"\n'
    (record,) = postgres_log.parse_csvlog(line)
    theirs = postgres_log.to_events(record, scope="s", server="pg")[0]
    keyed.use(keyed.Hasher(TEST_HASH_KEY))
    ours = postgres_log.to_events(record, scope="s", server="pg")[0]
    assert ours.id != theirs.id
    assert ours.raw["statement"]["hash"] != theirs.raw["statement"]["hash"]
    assert ours.raw["statement"]["normalized"] == theirs.raw["statement"]["normalized"]
    assert ours.id == postgres_log.to_events(record, scope="s", server="pg")[0].id


def test_the_key_is_never_shown_and_must_be_long_enough() -> None:
    h = keyed.Hasher(TEST_HASH_KEY)
    assert TEST_HASH_KEY.hex() not in repr(h) and repr(TEST_HASH_KEY) not in repr(h)
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        keyed.Hasher(b"short")


def test_without_an_installed_key_normalizers_refuse_rather_than_hash_weakly() -> None:
    keyed.use(None)
    try:
        with pytest.raises(ConfigError, match="no hash key loaded"):
            redact({"password": "hunter2"})
    finally:
        keyed.use(keyed.Hasher(TEST_HASH_KEY))
