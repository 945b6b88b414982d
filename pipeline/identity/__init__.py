"""Identity: which person is behind the principals of different systems (DESIGN.md §6), pure.

- :mod:`~pipeline.identity.principals`: the normalised notation ``<system>:<id>`` and
  :func:`principals_of` (the principals an event's actor stands for);
- :mod:`~pipeline.identity.config`: ``identities.yaml``, the people an operator declares
  (:func:`load_identities`);
- :mod:`~pipeline.identity.learn`: :func:`learn`, the joins one event's data proves (GitHub
  commit e-mails and logins, Okta logins and user ids, CloudTrail ``sourceIdentity`` and
  Identity Center users), each with its evidence and strength;
- :mod:`~pipeline.identity.resolve`: :class:`IdentityMap` (config + joins, union-find) with
  :meth:`IdentityMap.person_of`, and :func:`annotate` for query rows.

No Kafka, Faust or ClickHouse here; :mod:`pipeline.store.identities` stores learned joins.
"""

from pipeline.identity.config import ConfiguredPerson, IdentityConfig, load_identities
from pipeline.identity.learn import STRENGTHS, Join, Strength, learn, learn_all, make_join
from pipeline.identity.principals import (
    github_login_of_noreply,
    normalize,
    principals_from,
    principals_of,
)
from pipeline.identity.resolve import (
    CONFIGURED,
    Conflict,
    IdentityMap,
    Person,
    Step,
    annotate,
    person_summary,
)

__all__ = [
    "CONFIGURED",
    "STRENGTHS",
    "ConfiguredPerson",
    "Conflict",
    "IdentityConfig",
    "IdentityMap",
    "Join",
    "Person",
    "Step",
    "Strength",
    "annotate",
    "github_login_of_noreply",
    "learn",
    "learn_all",
    "load_identities",
    "make_join",
    "normalize",
    "person_summary",
    "principals_from",
    "principals_of",
]
