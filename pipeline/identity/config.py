"""``identities.yaml``: the people an operator declares, with the principals each one uses (pure).

Format::

    people:
      alice:                        # person id: letters, digits, ``._@-`` (no ``:``)
        name: Alice Ng              # optional, defaults to the id
        principals:
          - github:alice
          - git:alice@acme.io
          - okta:alice@acme.io
          - "aws:arn:aws:iam::123456789012:user/alice"   # or the bare ARN
          - postgres:alice          # role alice on any server; postgres:pg1:alice for one

Principals are normalised on load (:func:`pipeline.identity.principals.normalize`), so
``github:Alice`` and ``github:alice`` are one principal. Configured people are authoritative:
learned joins may attach more principals to them but never merge two of them. Person ids hold
no ``:`` so they can never be mistaken for the principal-shaped ids of unnamed people.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError, yaml_problem
from pipeline.identity.principals import normalize

_PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*\Z")
_PERSON_KEYS = frozenset({"name", "principals"})


@dataclass(frozen=True)
class ConfiguredPerson:
    """One entry of ``people``: its id, display name and normalised principals (sorted)."""

    id: str
    name: str
    principals: tuple[str, ...]


@dataclass(frozen=True)
class IdentityConfig:
    """The parsed ``identities.yaml``; ``origin`` names the file in messages."""

    people: Mapping[str, ConfiguredPerson] = field(default_factory=dict)
    origin: str = "identities.yaml"

    @property
    def owners(self) -> dict[str, str]:
        """Normalised principal -> id of the person who claims it."""
        return {p: person.id for person in self.people.values() for p in person.principals}

    @classmethod
    def from_obj(cls, obj: Any, origin: str = "identities.yaml") -> IdentityConfig:
        """Validate a parsed ``identities.yaml``; raise ConfigError naming the file and entry."""
        if obj is None:
            return cls(origin=origin)
        if not isinstance(obj, dict):
            raise ConfigError(f"{origin}: expected a mapping with the key `people`, got {type(obj).__name__}")
        unknown = sorted(str(k) for k in obj if k != "people")
        if unknown:
            raise ConfigError(
                f"{origin}: unknown key(s) {', '.join(map(repr, unknown))} (only `people` is allowed)"
            )
        people_obj = obj.get("people")
        if people_obj is None:
            return cls(origin=origin)
        if not isinstance(people_obj, dict):
            raise ConfigError(
                f"{origin}: `people` must map person ids to entries, got {type(people_obj).__name__}"
            )
        people: dict[str, ConfiguredPerson] = {}
        owner: dict[str, str] = {}
        for key, entry in people_obj.items():
            pid = str(key)
            where = f"{origin}: `people.{pid}`"
            if not isinstance(key, str) or not _PERSON_ID.match(pid):
                raise ConfigError(
                    f"{where}: a person id must be letters, digits and `._@-` without `:`, got {key!r}"
                )
            if entry is None:
                entry = {}
            if not isinstance(entry, dict):
                raise ConfigError(f"{where} must be a mapping with `name` and `principals`, got {entry!r}")
            bad_keys = sorted(str(k) for k in entry if k not in _PERSON_KEYS)
            if bad_keys:
                raise ConfigError(
                    f"{where}: unknown key(s) {', '.join(map(repr, bad_keys))} (allowed: name, principals)"
                )
            name = entry.get("name", pid)
            if name is None:
                name = pid
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{origin}: `people.{pid}.name` must be a non-empty string, got {name!r}")
            raw = entry.get("principals", [])
            if raw is None:
                raw = []
            if not isinstance(raw, list):
                raise ConfigError(
                    f"{origin}: `people.{pid}.principals` must be a list of `<system>:<id>` strings, got {raw!r}"
                )
            found: list[str] = []
            for i, item in enumerate(raw):
                at = f"{origin}: `people.{pid}.principals[{i}]`"
                if not isinstance(item, str):
                    raise ConfigError(f"{at} must be a string `<system>:<id>`, got {item!r}")
                principal = normalize(item)
                if principal is None:
                    raise ConfigError(
                        f"{at}: {item!r} is not a principal (expected `<system>:<id>` such as github:login, "
                        "git:<e-mail>, okta:<login>, aws:<ARN>, postgres:<role>; names are not principals)"
                    )
                if principal in owner and owner[principal] != pid:
                    raise ConfigError(
                        f"{at}: {item!r} is already claimed by person `{owner[principal]}`; "
                        "a principal belongs to one person"
                    )
                owner[principal] = pid
                if principal not in found:
                    found.append(principal)
            people[pid] = ConfiguredPerson(pid, name.strip(), tuple(sorted(found)))
        return cls(people, origin)


def load_identities(path: Path) -> IdentityConfig:
    """Read ``identities.yaml``; a missing file is an empty configuration (nothing declared)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return IdentityConfig(origin=str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    return IdentityConfig.from_obj(obj, str(path))
