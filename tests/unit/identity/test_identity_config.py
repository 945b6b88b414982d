"""``identities.yaml`` loading and its errors (pipeline/identity/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.identity import IdentityConfig, load_identities
from pipeline.settings import load

GOOD = """
people:
  alice:
    name: Alice Ng
    principals:
      - github:Alice
      - git:alice@acme.io
      - okta:Alice@acme.io
      - "aws:arn:aws:iam::123456789012:user/alice"
      - postgres:alice
      - github:alice          # same principal twice, differently spelled: kept once
  bob:
    principals: ["arn:aws:iam::123456789012:user/bob"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "identities.yaml"
    path.write_text(text)
    return path


def test_good_file_is_normalised(tmp_path: Path) -> None:
    config = load_identities(write(tmp_path, GOOD))

    alice = config.people["alice"]
    assert alice.name == "Alice Ng"
    assert alice.principals == (
        "aws:arn:aws:iam::123456789012:user/alice",
        "git:alice@acme.io",
        "github:alice",
        "okta:alice@acme.io",
        "postgres:alice",
    )
    bob = config.people["bob"]
    assert bob.name == "bob"  # defaults to the id
    assert bob.principals == ("aws:arn:aws:iam::123456789012:user/bob",)
    assert config.owners["github:alice"] == "alice"
    assert config.origin == str(tmp_path / "identities.yaml")


def test_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    config = load_identities(tmp_path / "nope.yaml")
    assert dict(config.people) == {}


@pytest.mark.parametrize("text", ["", "people:\n", "people: {}\n"])
def test_empty_documents_are_empty_configs(tmp_path: Path, text: str) -> None:
    assert dict(load_identities(write(tmp_path, text)).people) == {}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("- alice\n", ["expected a mapping with the key `people`"]),
        ("people: {}\ngroups: {}\n", ["unknown key(s) 'groups'"]),
        ("people: [alice]\n", ["`people` must map person ids"]),
        ("people:\n  alice: [github:alice]\n", ["`people.alice` must be a mapping"]),
        ("people:\n  alice:\n    email: a@b.io\n", ["`people.alice`", "unknown key(s) 'email'"]),
        ("people:\n  alice:\n    principals: github:alice\n", ["`people.alice.principals` must be a list"]),
        ("people:\n  alice:\n    principals: [42]\n", ["`people.alice.principals[0]` must be a string"]),
        (
            "people:\n  alice:\n    principals: [github:alice, 'git:Alice Ng']\n",
            ["`people.alice.principals[1]`", "'git:Alice Ng' is not a principal"],
        ),
        (
            "people:\n  alice:\n    principals: [alice]\n",
            ["`people.alice.principals[0]`", "is not a principal"],
        ),
        ("people:\n  alice:\n    name: ''\n", ["`people.alice.name` must be a non-empty string"]),
        ("people:\n  'github:alice':\n    principals: []\n", ["a person id must be", "without `:`"]),
        (
            "people:\n  alice:\n    principals: [github:alice]\n  mallory:\n    principals: [GitHub:ALICE]\n",
            ["`people.mallory.principals[0]`", "already claimed by person `alice`"],
        ),
        ("people:\n  alice: {principals: [\n", ["not valid YAML"]),
    ],
)
def test_bad_input_names_file_and_entry(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_identities(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_from_obj_default_origin() -> None:
    with pytest.raises(ConfigError, match=r"^identities.yaml: unknown key"):
        IdentityConfig.from_obj({"persons": {}})


def test_setting_defaults_to_home_and_can_be_overridden(tmp_path: Path) -> None:
    default = load({"CAUSELOG_HOME": str(tmp_path)})
    assert default.identities_path == tmp_path.resolve() / "identities.yaml"
    custom = load({"CAUSELOG_HOME": str(tmp_path), "CAUSELOG_IDENTITIES": str(tmp_path / "people.yaml")})
    assert custom.identities_path == (tmp_path / "people.yaml").resolve()
