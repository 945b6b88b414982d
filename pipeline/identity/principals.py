"""The normalised principal notation ``<system>:<id>`` (pure).

One spelling per identity, whichever source reported it, so a person's principals can be
compared as plain strings:

==================  =================================================  =========================
system              id                                                 example
==================  =================================================  =========================
``github``          login, lower-cased (GitHub logins ignore case)     ``github:octocat``
``git``             commit e-mail, lower-cased (names are never ids)   ``git:alice@acme.io``
``okta``            login (lower-cased when an e-mail) or user id      ``okta:alice@acme.io``,
                                                                       ``okta:00u1abvz4pYqdM8ms4x6``
``aws``             ``arn:...`` (case kept) or                         ``aws:arn:aws:iam::1:user/a``
                    ``source-identity:<value>``                        ``aws:source-identity:alice``
``aws-sso``         IAM Identity Center user name                      ``aws-sso:alice@acme.io``
``aws-<other>``     as the CloudTrail normalizer writes them           ``aws-saml:alice``,
                                                                       ``aws-service:ec2...``
``postgres``        ``<server>:<role>``; ``<role>`` alone means the     ``postgres:pg1:alice``,
                    role on any server (config only)                   ``postgres:alice``
``k8s``             Kubernetes user name                               ``k8s:alice``
``os``              ``<user>@<host>``                                  ``os:deploy@web1``
==================  =================================================  =========================

E-mail-shaped ids are lower-cased in every system but ``os`` (``user@host`` is not an e-mail)
and AWS ARNs (case-sensitive). Placeholders that name nobody (``git:unknown``,
``aws:anonymous``, ``aws:unknown:...``, ``postgres:<server>:unknown``, ``k8s:system:anonymous``,
``debezium:<server>``, terraform's ``unknown``)
are not principals: :func:`normalize` returns None for them, so they never join anything.
"""

from __future__ import annotations

import re
from typing import Protocol

_SYSTEM = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*):(.*)\Z", re.S)
_EMAIL = re.compile(r"^[^@\s:/]+@[^@\s:/]+\.[^@\s:/]+\Z")
_NOREPLY = re.compile(
    r"^(?:\d+\+)?([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\[bot\])?)@users\.noreply\.github\.com\Z"
)

#: Spellings of one system that sources use, mapped to the notation's name.
_ALIASES = {"postgresql": "postgres", "pg": "postgres", "kubernetes": "k8s", "gh": "github"}

#: Systems whose principals sources write with a prefix; a bare actor principal is only ever
#: read through the actor id's system (see :func:`principals_from`).
KNOWN_SYSTEMS = frozenset({"github", "git", "okta", "aws", "postgres", "k8s", "os", "mysql"})

_NOBODY = frozenset({"unknown", "anonymous", "none", "null", "system:anonymous"})


class ActorLike(Protocol):
    """What :func:`principals_of` reads from an actor (``pipeline.model.Actor`` fits)."""

    @property
    def id(self) -> str: ...

    @property
    def principal(self) -> str: ...


def normalize(text: str) -> str | None:
    """The normalised ``<system>:<id>`` of ``text``, or None when it names no one.

    Accepts the prefixed ids sources write (``github:Octocat``, ``git:Alice@Acme.io``,
    ``postgresql:db1:app``) and bare AWS ARNs (``arn:aws:iam::1:user/a`` -> ``aws:arn:...``).
    A bare string without a system (``alice``) is ambiguous and gives None.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text.startswith("arn:"):
        return _aws("arn:" + text[4:])
    m = _SYSTEM.match(text)
    if not m:
        return None
    system = m.group(1).lower()
    system = _ALIASES.get(system, system)
    rest = m.group(2).strip()
    if not rest or rest.lower() in _NOBODY or any(c in rest for c in "\n\r\t"):
        return None
    if system == "github":
        rest = rest.lower()
        return None if any(c.isspace() for c in rest) else f"github:{rest}"
    if system == "git":
        rest = rest.lower()
        # Names are not identities: only an e-mail says who wrote a commit.
        return f"git:{rest}" if _EMAIL.match(rest) else None
    if system == "aws":
        return _aws(rest)
    if system == "postgres":
        server, _, role = rest.rpartition(":")
        if role.lower() in _NOBODY or (server and not role):
            return None
        return f"postgres:{rest}"
    if system == "os":
        return f"os:{rest}"
    if system == "debezium":
        return None  # ``debezium:<server>``: a change whose record does not name its author
    return f"{system}:{_fold_email(rest)}"


def _aws(rest: str) -> str | None:
    if rest.startswith("arn:"):
        return f"aws:{rest}"
    low = rest.lower()
    if low in _NOBODY or low.startswith("unknown:"):
        return None
    if low.startswith("source-identity:"):
        value = rest.partition(":")[2].strip()
        return f"aws:source-identity:{_fold_email(value)}" if value else None
    return f"aws:{_fold_email(rest)}"


def _fold_email(value: str) -> str:
    return value.lower() if _EMAIL.match(value) else value


def is_email(value: str) -> bool:
    """Whether ``value`` is shaped like an e-mail address."""
    return bool(_EMAIL.match(value))


def github_login_of_noreply(email: str) -> str | None:
    """The GitHub login a ``[<id>+]<login>@users.noreply.github.com`` address belongs to.

    GitHub hands these addresses out per account, so the address alone proves the login.
    """
    m = _NOREPLY.match(email.strip().lower())
    return m.group(1) if m else None


def principals_from(actor_id: str, principal: str = "") -> tuple[str, ...]:
    """The normalised principals of an actor given its ``id`` and raw ``principal``.

    Order matters to :meth:`IdentityMap.person_of`, which takes the first one it knows: the
    identity that names the accountable human comes first. That is ``id`` (the resolved
    identity, e.g. the ``sourceIdentity`` behind an AWS role session) before ``principal``,
    except for Kubernetes, where ``principal`` is the user the API server authenticated and
    ``id`` an impersonated one. A bare ``principal`` (no ``<system>:``) is read in the id's
    system: git's is the e-mail as written, PostgreSQL's the role already in the id. For a
    PostgreSQL role the server-independent ``postgres:<role>`` comes last.
    """
    system = actor_id.partition(":")[0].lower() if ":" in actor_id else ""
    system = _ALIASES.get(system, system)
    from_id = normalize(actor_id)
    from_principal: str | None = None
    if principal:
        prefix = principal.partition(":")[0].lower() if ":" in principal else ""
        prefix = _ALIASES.get(prefix, prefix)
        if principal.startswith("arn:") or (
            prefix and (prefix in KNOWN_SYSTEMS or prefix == system or prefix.startswith("aws-"))
        ):
            from_principal = normalize(principal)
        elif system == "git":
            from_principal = normalize(f"git:{principal}")
    ordered = [from_principal, from_id] if system == "k8s" else [from_id, from_principal]
    out: list[str] = []
    for p in ordered:
        if p and p not in out:
            out.append(p)
    for p in list(out):
        if p.startswith("postgres:") and p.count(":") >= 2:
            generic = "postgres:" + p.split(":", 2)[2]
            if generic not in out:
                out.append(generic)
    return tuple(out)


def principals_of(actor: ActorLike) -> tuple[str, ...]:
    """The normalised principals an :class:`~pipeline.model.Actor` stands for (see
    :func:`principals_from` for the order)."""
    return principals_from(actor.id, actor.principal or "")
