"""Joins between principals learned from the data of single events (pure).

A :class:`Join` says two principals are the same account holder, with the evidence (the event
and the rule that saw it) and how strong that is:

- ``asserted`` -- the *system* (``github``, ``okta``, ``aws``, ``saml``, ``oidc``) itself states
  the two belong together; shown as ``asserted-by-<system>``;
- ``claimed`` -- an authenticated principal said so about itself (the system only recorded it).

Joins learned, and why each is trustworthy
------------------------------------------
GitHub webhooks (``source`` ``github://...``; ``raw`` is the payload):

- ``github.commit-username``: a commit identity ``{email, username}`` in ``commits[]`` /
  ``head_commit`` (push), ``check_suite.head_commit``, ``merge_group.head_commit``,
  ``workflow_run.head_commit`` -> ``git:<email>`` = ``github:<username>``. GitHub fills
  ``username`` only when the e-mail is a *verified* address of that account, so the match is
  GitHub's, not the committer's (anyone can write any e-mail into a commit; the username is
  absent then). ``asserted-by-github``.
- ``github.commit-user``: ``commit.commit.author.email`` with ``commit.author.login`` (and the
  committer) of ``status`` payloads: the API's user object is GitHub's match of that e-mail.
  ``asserted-by-github``.
- ``github.pusher``: ``pusher.email`` = the sender's login, only when ``pusher.name`` *is* that
  login (GitHub fills the pusher from the authenticated account; pushes by deploy keys or apps
  carry other names and are skipped). ``asserted-by-github``.
- ``github.noreply-address``: any ``[<id>+]<login>@users.noreply.github.com`` e-mail seen (in the
  payloads above or as a git actor of any source) = ``github:<login>``: GitHub issues such
  addresses per account. ``asserted-by-github``.

Okta System Log (``source`` ``okta://...``):

- ``okta.user-id``: the ``actor`` and every ``target[]`` of type ``User``: ``okta:<alternateId>``
  (the login) = ``okta:<id>``, when ``id`` has the shape of an Okta user id (``00u`` + 17
  characters; placeholders in redacted logs such as ``id`` or ``user_id`` would otherwise merge
  strangers). Okta states both of one account, and the id survives a login rename.
  ``asserted-by-okta``.

CloudTrail (``source`` ``cloudtrail://...``; ``raw`` is the record):

- ``aws.source-identity``: a successful ``AssumeRole`` by a long-term identity (``IAMUser`` or
  ``Root``, AWS authenticated the caller) that sets ``sourceIdentity`` -> caller ARN =
  ``aws:source-identity:<value>``. The caller chose the value and AWS recorded it (and keeps it
  for the whole role chain, so ``aws:source-identity:<value>`` is the actor id of every later
  call). ``claimed``.
- ``aws.saml-source-identity`` / ``aws.web-identity-source-identity``: a successful
  ``AssumeRoleWithSAML`` / ``AssumeRoleWithWebIdentity`` that returns a ``sourceIdentity``:
  ``aws-saml:<userName>`` / ``aws-webidentity:<userName>`` = ``aws:source-identity:<value>``.
  The value comes from the IdP's signed assertion / token. ``asserted-by-saml`` /
  ``asserted-by-oidc``.
- ``aws.sso-user``: an ``AssumedRole`` session of an IAM Identity Center role
  (``sessionIssuer`` under ``/aws-reserved/sso.amazonaws.com/``): AWS names the session after the
  Identity Center user (the user cannot choose it), so the session ARN = ``aws-sso:<user>``
  (the session name of ``principalId`` ``<roleId>:<session>``). Likewise an
  ``IdentityCenterUser`` identity: ``aws-identitycenter:<store>/<userId>`` = ``aws-sso:<userName>``.
  ``asserted-by-aws``.

Not learned, on purpose: anything from display names (``pusher.name``, commit author names,
Okta ``displayName``); a GitHub sender with a commit *author* e-mail (people push others'
commits); an ordinary role session ARN with its ``sourceIdentity`` or its issuer (session names
are chosen by the caller and reused, so one ARN would merge strangers); ``noreply@github.com``
(shared by every web-flow commit); GitHub numeric user ids (a freed login is reused by another
account, so login = id is only true for a time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.identity.principals import github_login_of_noreply, normalize, principals_of
from pipeline.model import Event

Strength = Literal["asserted", "claimed"]

#: Stronger first: the order joins are applied in (see :class:`~pipeline.identity.resolve.IdentityMap`).
STRENGTHS: tuple[Strength, ...] = ("asserted", "claimed")

_OKTA_USER_ID = re.compile(r"^00u[0-9A-Za-z]{17}\Z")
_SSO_PATH = "/aws-reserved/sso.amazonaws.com/"
_SHARED_EMAILS = frozenset({"noreply@github.com"})


@dataclass(frozen=True, order=True)
class Join:
    """Principals ``a`` < ``b`` (normalised) belong to one account holder.

    ``strength`` and ``system`` say who vouches for it (``asserted`` by ``system``, or
    ``claimed``); ``rule`` names the rule of this module that saw it; ``event_id`` is the event
    that carries the evidence. Build with :func:`make_join`, which orders and normalises.
    """

    a: str
    b: str
    strength: Strength
    system: str
    rule: str
    event_id: str

    @property
    def assurance(self) -> str:
        """``asserted-by-<system>`` or ``claimed``: what a query shows for this step."""
        return f"asserted-by-{self.system}" if self.strength == "asserted" else "claimed"

    @property
    def sort_key(self) -> tuple[int, str, str, str, str, str]:
        """Strongest first, then by content: the canonical order joins are applied in."""
        return (STRENGTHS.index(self.strength), self.a, self.b, self.system, self.rule, self.event_id)


def make_join(p: str, q: str, *, strength: Strength, system: str, rule: str, event_id: str) -> Join | None:
    """A :class:`Join` of two principals, normalised and ordered; None when either names no one
    or both are the same principal."""
    a, b = normalize(p), normalize(q)
    if a is None or b is None or a == b:
        return None
    if strength not in STRENGTHS:
        raise ValueError(f"unknown join strength {strength!r}")
    a, b = sorted((a, b))
    return Join(a, b, strength, system, rule, event_id)


def learn(event: Event) -> list[Join]:
    """The joins one event's data proves (see the module docstring), sorted, without repeats."""
    found: list[Join | None] = []
    source = event.source.partition("://")[0]
    raw = event.raw if isinstance(event.raw, dict) else {}
    if source == "github":
        found += _github(raw, event.id)
    elif source == "okta":
        found += _okta(raw, event.id)
    elif source == "cloudtrail":
        found += _cloudtrail(raw, event.id)
    # Any source: a git actor with a GitHub no-reply address (git commits, config files).
    for principal in principals_of(event.actor):
        if principal.startswith("git:"):
            found.append(_noreply(principal[4:], event.id))
    return sorted({j for j in found if j is not None})


def learn_all(events: Iterable[Event]) -> list[Join]:
    """The joins of many events, sorted, each distinct join once."""
    return sorted({j for ev in events for j in learn(ev)})


# -- GitHub ---------------------------------------------------------------------------------


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _noreply(email: str, event_id: str) -> Join | None:
    login = github_login_of_noreply(email)
    if login is None:
        return None
    return make_join(
        f"git:{email}",
        f"github:{login}",
        strength="asserted",
        system="github",
        rule="github.noreply-address",
        event_id=event_id,
    )


def _github_email(email: str, login: str, rule: str, event_id: str) -> list[Join | None]:
    if not email or not login or email.lower() in _SHARED_EMAILS:
        return [_noreply(email, event_id)] if email else []
    return [
        make_join(
            f"git:{email}",
            f"github:{login}",
            strength="asserted",
            system="github",
            rule=rule,
            event_id=event_id,
        ),
        _noreply(email, event_id),
    ]


def _github(payload: dict[str, Any], event_id: str) -> list[Join | None]:
    out: list[Join | None] = []
    commits: list[Any] = []
    if isinstance(payload.get("commits"), list):
        commits += payload["commits"]
    for holder in (
        payload,
        payload.get("check_suite"),
        payload.get("merge_group"),
        payload.get("workflow_run"),
    ):
        if isinstance(holder, dict) and isinstance(holder.get("head_commit"), dict):
            commits.append(holder["head_commit"])
    for commit in commits:
        if not isinstance(commit, dict):
            continue
        for role in ("author", "committer"):
            who = commit.get(role)
            if isinstance(who, dict):
                out += _github_email(
                    _str(who.get("email")), _str(who.get("username")), "github.commit-username", event_id
                )
    # status payloads: commit.commit.<role>.email with commit.<role>.login (GitHub's user match)
    api_commit = payload.get("commit")
    if isinstance(api_commit, dict) and isinstance(api_commit.get("commit"), dict):
        for role in ("author", "committer"):
            git_side = api_commit["commit"].get(role)
            user = api_commit.get(role)
            if isinstance(git_side, dict) and isinstance(user, dict):
                out += _github_email(
                    _str(git_side.get("email")), _str(user.get("login")), "github.commit-user", event_id
                )
    pusher = payload.get("pusher")
    sender = payload.get("sender")
    if isinstance(pusher, dict) and isinstance(sender, dict):
        login = _str(sender.get("login"))
        if login and _str(pusher.get("name")).lower() == login.lower():
            out += _github_email(_str(pusher.get("email")), login, "github.pusher", event_id)
    return out


# -- Okta -----------------------------------------------------------------------------------


def _okta_user(entity: Any, event_id: str) -> Join | None:
    if not isinstance(entity, dict) or entity.get("type") != "User":
        return None
    login, uid = _str(entity.get("alternateId")), _str(entity.get("id"))
    if not login or not _OKTA_USER_ID.match(uid):
        return None
    return make_join(
        f"okta:{login}",
        f"okta:{uid}",
        strength="asserted",
        system="okta",
        rule="okta.user-id",
        event_id=event_id,
    )


def _okta(record: dict[str, Any], event_id: str) -> list[Join | None]:
    out = [_okta_user(record.get("actor"), event_id)]
    targets = record.get("target")
    if isinstance(targets, list):
        out += [_okta_user(t, event_id) for t in targets]
    return out


# -- CloudTrail -----------------------------------------------------------------------------


def _dig(obj: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def _cloudtrail(record: dict[str, Any], event_id: str) -> list[Join | None]:
    identity = record.get("userIdentity")
    if not isinstance(identity, dict):
        return []
    out: list[Join | None] = []
    kind = identity.get("type")
    name = record.get("eventName")
    ok = not record.get("errorCode")
    issued = _str(_dig(record, "responseElements", "sourceIdentity")) or _str(
        _dig(record, "requestParameters", "sourceIdentity")
    )
    arn = _str(identity.get("arn"))
    own_source_identity = _str(_dig(identity, "sessionContext", "sourceIdentity")) or _str(
        identity.get("sourceIdentity")
    )
    if ok and issued:
        if name == "AssumeRole" and kind in ("IAMUser", "Root") and arn and not own_source_identity:
            out.append(
                make_join(
                    arn,
                    f"aws:source-identity:{issued}",
                    strength="claimed",
                    system="aws",
                    rule="aws.source-identity",
                    event_id=event_id,
                )
            )
        user = _str(identity.get("userName"))
        if name == "AssumeRoleWithSAML" and kind == "SAMLUser" and user:
            out.append(
                make_join(
                    f"aws-saml:{user}",
                    f"aws:source-identity:{issued}",
                    strength="asserted",
                    system="saml",
                    rule="aws.saml-source-identity",
                    event_id=event_id,
                )
            )
        if name == "AssumeRoleWithWebIdentity" and kind == "WebIdentityUser" and user:
            out.append(
                make_join(
                    f"aws-webidentity:{user}",
                    f"aws:source-identity:{issued}",
                    strength="asserted",
                    system="oidc",
                    rule="aws.web-identity-source-identity",
                    event_id=event_id,
                )
            )
    if kind == "AssumedRole" and arn:
        issuer = _str(_dig(identity, "sessionContext", "sessionIssuer", "arn"))
        principal_id = _str(identity.get("principalId"))
        session = principal_id.partition(":")[2] if ":" in principal_id else arn.rpartition("/")[2]
        if _SSO_PATH in issuer and session:
            out.append(
                make_join(
                    arn,
                    f"aws-sso:{session}",
                    strength="asserted",
                    system="aws",
                    rule="aws.sso-user",
                    event_id=event_id,
                )
            )
    if kind == "IdentityCenterUser":
        user = _str(identity.get("userName"))
        user_id = _str(_dig(identity, "onBehalfOf", "userId"))
        store = _str(_dig(identity, "onBehalfOf", "identityStoreArn"))
        if user and user_id and store:
            out.append(
                make_join(
                    f"aws-identitycenter:{store}/{user_id}",
                    f"aws-sso:{user}",
                    strength="asserted",
                    system="aws",
                    rule="aws.sso-user",
                    event_id=event_id,
                )
            )
    return out
