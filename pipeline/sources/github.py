"""GitHub webhook payloads -> change events (pure part of the GitHub source).

``to_events(payload, event_name=..., delivery_id=..., scope=..., received_at=...)`` maps one
webhook delivery body (``event_name`` is the ``X-GitHub-Event`` header, ``delivery_id`` the
``X-GitHub-Delivery`` header) to exactly one envelope. Nothing is ever dropped: an event kind
without a dedicated mapping becomes a generic ``github.<event>[.<action>]`` event.

Types (``<x>`` is the payload ``action`` unless said otherwise)
---------------------------------------------------------------
===========================  ================================================================
``push``                     ``git.push`` (action ``push``, ``force_push`` or ``delete``)
``create`` / ``delete``      ``git.ref.created`` / ``git.ref.deleted`` (target kind = ref_type)
``pull_request``             ``change.merged`` (closed + merged), ``change.closed``, else
                             ``change.<x>`` (``change.opened``, ``change.synchronize``...)
``pull_request_review``      ``change.reviewed`` (submitted; action = review state such as
                             ``approved``), ``change.review_dismissed``, ``change.review_<x>``
``release``                  ``release.<x>`` (``release.published``...)
``deployment``               ``deploy.created``
``deployment_status``        ``deploy.succeeded`` (success), ``deploy.failed`` (failure, error),
                             else ``deploy.<state>`` (``deploy.in_progress``, ``deploy.queued``...)
``workflow_run``             completed: ``ci.run.<conclusion>``, else ``ci.run.<x>``
``workflow_job``             completed: ``ci.job.<conclusion>``, else ``ci.job.<x>``
``check_run``                completed: ``ci.check.<conclusion>``, else ``ci.check.<x>``
``check_suite``              completed: ``ci.suite.<conclusion>``, else ``ci.suite.<x>``
``member``                   ``access.member.<x>`` (repository collaborators)
``membership``               ``access.team.member_<x>`` (``member_added``, ``member_removed``)
``team``                     ``access.team.<x>`` (``created``, ``added_to_repository``...)
``repository``               ``repo.<x>`` (``repo.created``, ``repo.privatized``...)
``branch_protection_rule``   ``config.branch_protection.<x>``
anything else                ``github.<event>[.<x>]`` (``github.ping``, ``github.status``,
                             ``github.installation.created``, ``github.org_block.blocked``...)
===========================  ================================================================

Conclusions are spelled ``succeeded`` (success) and ``failed`` (failure, startup_failure);
others keep GitHub's word (``cancelled``, ``timed_out``, ``skipped``, ``neutral``,
``action_required``, ``stale``).

Outcome: ``failure`` for failure/error/startup_failure/timed_out conclusions and states;
``unknown`` while a run, job, check or deployment is not finished (queued, in_progress,
pending, waiting) and for cancelled/stale/action_required results, which prove nothing either
way; ``success`` otherwise (including every non-CI event: GitHub only sends them once the change
has been made).

Links
-----
- ``commit:<sha>``: push ``after`` and every ``commits[].id`` (commits stay in ``raw``); a pull
  request's head sha, and its ``merge_commit_sha`` once merged (an unmerged PR's merge sha is a
  throwaway test merge, so it is not linked); a review's ``commit_id``; ``deployment.sha``;
  ``head_sha`` of workflow runs/jobs, check runs and suites; ``sha`` of a status; a release's
  ``target_commitish`` when it is a sha. The all-zero sha of a created/deleted ref is never linked.
- ``change:<owner/repo>#<n>``: pull requests, reviews, review comments, and the pull requests a
  workflow run / check run / check suite lists. The repository of such a listed pull request is
  read from its API ``url`` (the list may name pull requests of another repository, e.g. the
  upstream of a fork); without a url it is assumed only when ``base.repo.id`` is the payload's
  repository.
- ``deploy:<id>``: deployments, deployment statuses, workflow jobs that carry a deployment.

Actor: the ``sender`` -- ``github:<login>`` as id and principal, ``display`` = login; kind
``service`` for ``type: Bot`` or logins ending in ``[bot]``, ``human`` for users, ``unknown``
for organizations and others; ``verified`` and ``assurance: authenticated`` (GitHub
authenticated the sender; webhook push commits carry no signature verification, so nothing is
``signed`` here). The pusher's name and e-mail stay in ``raw.pusher`` for the identity map.

Target: ``repo`` (id ``owner/repo``) for repository-level events, with ``environment`` set for
deployments and deployment statuses; ``branch``/``tag`` (id ``owner/repo@<ref>``) for pushes and
ref creation/deletion; ``pull_request`` (id ``owner/repo#<n>``); ``release``
(``owner/repo@<tag>``); ``workflow`` (``owner/repo:<workflow path>``), ``workflow_job``,
``check`` (``owner/repo:<check name>``), ``check_suite``; ``team`` (``org/<team slug>``);
``branch_protection_rule`` (``owner/repo:<pattern>``); otherwise ``org`` or ``installation``,
or the sending ``user``.

Time, first that parses: the payload's own timestamp for what happened (push:
``repository.pushed_at`` -- the push, not the commit -- then ``head_commit.timestamp``; pull
request: ``merged_at``/``closed_at``/``updated_at``; review: ``submitted_at``; deployment and
status: ``created_at``; run: ``updated_at``; job and check: ``completed_at``/``started_at``;
repository: ``created_at``/``updated_at``...), else ``received_at`` (the delivery time the caller
passes; member, membership, team and org payloads carry no time of their own), else
``repository.pushed_at``/``updated_at`` as a last deterministic resort. With none of these the
payload is rejected with a DecodeError asking for ``received_at``.

Id: ``event_id("github", delivery_id)`` when the delivery id is known, else
``event_id("github", event_name, keyed hash of the canonical JSON of the payload)`` -- the same body
always gets the same id, so a replay is idempotent. ``source`` is
``github://<owner/repo>`` (else ``github://<org>``, else the installation account, else the
sender). ``raw`` is the payload passed through :func:`~pipeline.sources.redact.redact`.
``diff`` is set when a payload says what it changed (``changes`` of ``edited``/``renamed``/
``transferred`` payloads and ``member`` edits): before from ``changes.*.from``, after from the
current object, users/orgs reduced to their login.

Malformed input (not an object, no ``sender``, no ``repository`` where one is required, a
required field missing or of the wrong type) raises :class:`pipeline.errors.DecodeError` naming
the JSON path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pipeline.errors import DecodeError
from pipeline.model import Event, event_id
from pipeline.sources._normalize import (
    as_utc,
    build,
    canonical_digest,
    dig,
    fail,
    first_time,
    need,
    require_dict,
    slug,
)
from pipeline.sources.diff import structured_diff
from pipeline.sources.redact import redact

__all__ = ["HANDLED_EVENTS", "to_events"]

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_ZERO_SHA = re.compile(r"0+")
_PR_URL = re.compile(r"/repos/(?P<repo>[^/\s]+/[^/\s]+)/pulls/(?P<n>\d+)$")

_CONCLUSION_WORD = {
    "success": "succeeded",
    "failure": "failed",
    "startup_failure": "failed",
    "error": "failed",
}
_FAILED = frozenset({"failure", "error", "startup_failure", "timed_out"})
_INCONCLUSIVE = frozenset({"cancelled", "stale", "action_required"})
_UNFINISHED = frozenset({"queued", "in_progress", "pending", "waiting", "requested"})


class _Ctx:
    """What every handler needs: the payload, its action and repository, the fields it builds."""

    def __init__(self, payload: dict[str, Any], event_name: str) -> None:
        self.payload = payload
        self.event_name = event_name
        action = payload.get("action")
        if action is not None and not isinstance(action, str):
            raise fail("wrong_type", "expected a string", "$.action", action)
        self.action: str | None = action or None
        repo = payload.get("repository")
        self.repo: dict[str, Any] | None = require_dict(repo, "$.repository") if repo is not None else None
        self.time_candidates: list[tuple[str, Any]] = []
        self.late_candidates: list[tuple[str, Any]] = []

    # -- repository ------------------------------------------------------------------------
    def full_name(self) -> str:
        if self.repo is None:
            raise fail("missing_field", f"`{self.event_name}` payloads need a repository", "$.repository")
        return need(self.payload, "repository", "full_name")

    def repo_target(self, environment: str = "") -> dict[str, Any]:
        full = self.full_name()
        return {
            "kind": "repo",
            "id": full,
            "name": str(dig(self.repo, "name", default=full)),
            "environment": environment,
        }

    def org_login(self) -> str | None:
        login = dig(self.payload, "organization", "login")
        return login if isinstance(login, str) and login else None


# --------------------------------------------------------------------------------------------
# helpers


def _commit(sha: Any) -> str | None:
    if isinstance(sha, str) and _SHA.fullmatch(sha) and not _ZERO_SHA.fullmatch(sha):
        return f"commit:{sha}"
    return None


def _listed_changes(ctx: _Ctx, prs: Any) -> list[str]:
    """``change:`` links of the pull requests a run/check lists (see the module docstring)."""
    out: list[str] = []
    if not isinstance(prs, list):
        return out
    repo_id = dig(ctx.repo, "id")
    for pr in prs:
        if (
            not isinstance(pr, dict)
            or not isinstance(pr.get("number"), int)
            or isinstance(pr.get("number"), bool)
        ):
            continue
        url = pr.get("url")
        m = _PR_URL.search(url) if isinstance(url, str) else None
        if m and int(m.group("n")) == pr["number"]:
            out.append(f"change:{m.group('repo')}#{pr['number']}")
            continue
        base_url = dig(pr, "base", "repo", "url")
        m = re.search(r"/repos/([^/\s]+/[^/\s]+)$", base_url) if isinstance(base_url, str) else None
        if m:
            out.append(f"change:{m.group(1)}#{pr['number']}")
        elif repo_id is not None and dig(pr, "base", "repo", "id") == repo_id and ctx.repo is not None:
            out.append(f"change:{ctx.full_name()}#{pr['number']}")
    return out


def _result_word(conclusion: str) -> str:
    return _CONCLUSION_WORD.get(conclusion, slug(conclusion))


def _result_outcome(value: str | None, *, finished: bool) -> str:
    if not finished or value is None:
        return "unknown"
    if value in _FAILED:
        return "failure"
    if value in _INCONCLUSIVE or value in _UNFINISHED:
        return "unknown"
    return "success"


def _login_of(value: Any) -> Any:
    """GitHub user/org objects reduced to their login for diffs."""
    if isinstance(value, dict):
        if isinstance(value.get("login"), str):
            return value["login"]
        if len(value) == 1:
            (only,) = value.values()
            if isinstance(only, dict) and isinstance(only.get("login"), str):
                return only["login"]
    return value


def _changes_diff(changes: Any, current: Any, own_name: str | None = None) -> dict[str, Any] | None:
    """before/after from a ``changes`` object (``{"field": {"from": old}}``, possibly nested)."""
    if not isinstance(changes, dict) or not changes:
        return None
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}

    def walk(node: dict[str, Any], cur: Any, b: dict[str, Any], a: dict[str, Any]) -> None:
        for key, change in node.items():
            if not isinstance(change, dict):
                continue
            here = cur.get(key) if isinstance(cur, dict) else None
            if "from" in change or "to" in change:
                if "from" in change:
                    b[key] = _login_of(change["from"])
                if "to" in change:
                    a[key] = _login_of(change["to"])
                elif isinstance(cur, dict) and key in cur:
                    a[key] = _login_of(here)
            else:
                if key == own_name and not (isinstance(cur, dict) and key in cur):
                    # ``changes.repository.name.from`` on a repository payload: the object itself.
                    walk(change, cur, b, a)
                    continue
                b2: dict[str, Any] = {}
                a2: dict[str, Any] = {}
                walk(change, here, b2, a2)
                if b2:
                    b[key] = b2
                if a2:
                    a[key] = a2

    walk(changes, current, before, after)
    diff = structured_diff(before, after)
    return diff if diff["changed"] else None


# --------------------------------------------------------------------------------------------
# handlers: each returns the envelope fields it decides (type, action, target, links...)

Handler = Callable[[_Ctx], dict[str, Any]]


def _push(ctx: _Ctx) -> dict[str, Any]:
    p = ctx.payload
    full = ctx.full_name()
    ref = need(p, "ref")
    if ref.startswith("refs/heads/"):
        kind, short = "branch", ref[len("refs/heads/") :]
    elif ref.startswith("refs/tags/"):
        kind, short = "tag", ref[len("refs/tags/") :]
    else:
        kind, short = "ref", ref
    commits = p.get("commits") or []
    if not isinstance(commits, list):
        raise fail("wrong_type", "expected an array", "$.commits", commits)
    links = [_commit(p.get("after"))] + [_commit(c.get("id")) for c in commits if isinstance(c, dict)]
    action = "delete" if p.get("deleted") is True else "force_push" if p.get("forced") is True else "push"
    ctx.time_candidates += [
        ("$.repository.pushed_at", dig(p, "repository", "pushed_at")),
        ("$.head_commit.timestamp", dig(p, "head_commit", "timestamp")),
    ]
    return {
        "type": "git.push",
        "action": action,
        "target": {"kind": kind, "id": f"{full}@{short}", "name": short},
        "subject": short,
        "links": links,
    }


def _ref_event(verb: str) -> Handler:
    def handler(ctx: _Ctx) -> dict[str, Any]:
        full = ctx.full_name()
        ref = need(ctx.payload, "ref")
        ref_type = need(ctx.payload, "ref_type")
        ctx.time_candidates.append(("$.repository.pushed_at", dig(ctx.repo, "pushed_at")))
        return {
            "type": f"git.ref.{verb}d",
            "action": verb,
            "target": {"kind": slug(ref_type), "id": f"{full}@{ref}", "name": ref},
            "subject": ref,
            "links": [],
        }

    return handler


def _pr_target(full: str, number: int, pr: dict[str, Any]) -> dict[str, Any]:
    title = pr.get("title")
    return {"kind": "pull_request", "id": f"{full}#{number}", "name": title if isinstance(title, str) else ""}


def _pull_request(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    pr = need(ctx.payload, "pull_request", kind=dict)
    number = need(ctx.payload, "pull_request", "number", kind=int)
    action = ctx.action or "updated"
    merged = action == "closed" and pr.get("merged") is True
    links = [f"change:{full}#{number}", _commit(dig(pr, "head", "sha"))]
    if merged:
        type_, verb = "change.merged", "merge"
        links.append(_commit(pr.get("merge_commit_sha")))
        ctx.time_candidates += [
            ("$.pull_request.merged_at", pr.get("merged_at")),
            ("$.pull_request.closed_at", pr.get("closed_at")),
        ]
    elif action == "closed":
        type_, verb = "change.closed", "close"
        ctx.time_candidates.append(("$.pull_request.closed_at", pr.get("closed_at")))
    else:
        type_, verb = f"change.{slug(action)}", action
    ctx.time_candidates += [
        ("$.pull_request.updated_at", pr.get("updated_at")),
        ("$.pull_request.created_at", pr.get("created_at")),
    ]
    base = dig(pr, "base", "ref")
    return {
        "type": type_,
        "action": verb,
        "target": _pr_target(full, number, pr),
        "subject": base if isinstance(base, str) else None,
        "links": links,
    }


def _pull_request_review(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    review = need(ctx.payload, "review", kind=dict)
    pr = need(ctx.payload, "pull_request", kind=dict)
    number = need(ctx.payload, "pull_request", "number", kind=int)
    action = ctx.action or "submitted"
    state = review.get("state")
    if action == "submitted":
        type_ = "change.reviewed"
        verb = state.lower() if isinstance(state, str) and state else "review"
        ctx.time_candidates.append(("$.review.submitted_at", review.get("submitted_at")))
    else:
        type_ = "change.review_dismissed" if action == "dismissed" else f"change.review_{slug(action)}"
        verb = action
        ctx.time_candidates.append(("$.pull_request.updated_at", pr.get("updated_at")))
    ctx.late_candidates.append(("$.review.submitted_at", review.get("submitted_at")))
    return {
        "type": type_,
        "action": verb,
        "target": _pr_target(full, number, pr),
        "links": [f"change:{full}#{number}", _commit(review.get("commit_id"))],
    }


def _release(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    rel = need(ctx.payload, "release", kind=dict)
    tag = need(ctx.payload, "release", "tag_name")
    action = ctx.action or "published"
    if action in ("published", "released", "prereleased"):
        ctx.time_candidates.append(("$.release.published_at", rel.get("published_at")))
    elif action == "created":
        ctx.time_candidates.append(("$.release.created_at", rel.get("created_at")))
    ctx.late_candidates += [
        ("$.release.published_at", rel.get("published_at")),
        ("$.release.created_at", rel.get("created_at")),
    ]
    name = rel.get("name")
    return {
        "type": f"release.{slug(action)}",
        "action": action,
        "target": {
            "kind": "release",
            "id": f"{full}@{tag}",
            "name": name if isinstance(name, str) and name else tag,
        },
        "subject": tag,
        "links": [_commit(rel.get("target_commitish"))],
        "diff": _changes_diff(ctx.payload.get("changes"), rel),
    }


def _deployment(ctx: _Ctx) -> dict[str, Any]:
    dep = need(ctx.payload, "deployment", kind=dict)
    dep_id = need(ctx.payload, "deployment", "id", kind=(int, str))
    env = dep.get("environment") if isinstance(dep.get("environment"), str) else ""
    action = ctx.action or "created"
    ctx.time_candidates += [
        ("$.deployment.created_at", dep.get("created_at")),
        ("$.deployment.updated_at", dep.get("updated_at")),
    ]
    ref = dep.get("ref")
    return {
        "type": f"deploy.{slug(action)}",
        "action": action,
        "target": ctx.repo_target(environment=env),
        "subject": ref if isinstance(ref, str) else None,
        "links": [f"deploy:{dep_id}", _commit(dep.get("sha"))],
    }


def _deployment_status(ctx: _Ctx) -> dict[str, Any]:
    status = need(ctx.payload, "deployment_status", kind=dict)
    state = need(ctx.payload, "deployment_status", "state").lower()
    dep = need(ctx.payload, "deployment", kind=dict)
    dep_id = need(ctx.payload, "deployment", "id", kind=(int, str))
    env = status.get("environment") or dep.get("environment") or ""
    ctx.time_candidates += [
        ("$.deployment_status.updated_at", status.get("updated_at")),
        ("$.deployment_status.created_at", status.get("created_at")),
    ]
    ref = dep.get("ref")
    return {
        "type": f"deploy.{_result_word(state)}",
        "action": "deploy",
        "target": ctx.repo_target(environment=env if isinstance(env, str) else ""),
        "subject": ref if isinstance(ref, str) else None,
        "outcome": _result_outcome(state, finished=state not in _UNFINISHED),
        "links": [f"deploy:{dep_id}", _commit(dep.get("sha"))],
    }


def _ci_type(prefix: str, action: str | None, status: Any, conclusion: Any) -> tuple[str, str]:
    """(type, outcome) for runs, jobs, checks and suites."""
    finished = action == "completed" or status == "completed"
    if action == "completed" and isinstance(conclusion, str) and conclusion:
        return f"{prefix}.{_result_word(conclusion)}", _result_outcome(conclusion, finished=True)
    word = slug(action or (status if isinstance(status, str) else "updated"))
    return f"{prefix}.{word}", _result_outcome(
        conclusion if isinstance(conclusion, str) else None, finished=finished
    )


def _workflow_run(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    run = need(ctx.payload, "workflow_run", kind=dict)
    type_, outcome = _ci_type("ci.run", ctx.action, run.get("status"), run.get("conclusion"))
    ctx.time_candidates += [
        ("$.workflow_run.updated_at", run.get("updated_at")),
        ("$.workflow_run.run_started_at", run.get("run_started_at")),
        ("$.workflow_run.created_at", run.get("created_at")),
    ]
    path = (
        run.get("path") or dig(ctx.payload, "workflow", "path") or run.get("workflow_id") or run.get("name")
    )
    name = run.get("name") or dig(ctx.payload, "workflow", "name") or str(path)
    branch = run.get("head_branch")
    return {
        "type": type_,
        "action": ctx.action or "run",
        "target": {"kind": "workflow", "id": f"{full}:{path}", "name": str(name)},
        "subject": branch if isinstance(branch, str) else None,
        "outcome": outcome,
        "links": [_commit(run.get("head_sha")), *_listed_changes(ctx, run.get("pull_requests"))],
    }


def _workflow_job(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    job = need(ctx.payload, "workflow_job", kind=dict)
    job_name = need(ctx.payload, "workflow_job", "name")
    type_, outcome = _ci_type("ci.job", ctx.action, job.get("status"), job.get("conclusion"))
    ctx.time_candidates += [
        ("$.workflow_job.completed_at", job.get("completed_at")),
        ("$.workflow_job.started_at", job.get("started_at")),
        ("$.workflow_job.created_at", job.get("created_at")),
    ]
    workflow = job.get("workflow_name") or job.get("run_id") or "workflow"
    dep = ctx.payload.get("deployment")
    links = [_commit(job.get("head_sha"))]
    env = ""
    if isinstance(dep, dict):
        if dep.get("id") is not None:
            links.append(f"deploy:{dep['id']}")
        env = dep["environment"] if isinstance(dep.get("environment"), str) else ""
    branch = job.get("head_branch")
    return {
        "type": type_,
        "action": ctx.action or "run",
        "target": {
            "kind": "workflow_job",
            "id": f"{full}:{workflow}/{job_name}",
            "name": job_name,
            "environment": env,
        },
        "subject": branch if isinstance(branch, str) else None,
        "outcome": outcome,
        "links": links,
    }


def _check_run(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    run = need(ctx.payload, "check_run", kind=dict)
    name = need(ctx.payload, "check_run", "name")
    type_, outcome = _ci_type("ci.check", ctx.action, run.get("status"), run.get("conclusion"))
    if ctx.action == "completed":
        ctx.time_candidates.append(("$.check_run.completed_at", run.get("completed_at")))
    ctx.time_candidates += [
        ("$.check_run.started_at", run.get("started_at")),
        ("$.check_run.check_suite.updated_at", dig(run, "check_suite", "updated_at")),
    ]
    return {
        "type": type_,
        "action": ctx.action or "check",
        "target": {"kind": "check", "id": f"{full}:{name}", "name": name},
        "outcome": outcome,
        "links": [_commit(run.get("head_sha")), *_listed_changes(ctx, run.get("pull_requests"))],
    }


def _check_suite(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    suite = need(ctx.payload, "check_suite", kind=dict)
    suite_id = need(ctx.payload, "check_suite", "id", kind=(int, str))
    type_, outcome = _ci_type("ci.suite", ctx.action, suite.get("status"), suite.get("conclusion"))
    ctx.time_candidates += [
        ("$.check_suite.updated_at", suite.get("updated_at")),
        ("$.check_suite.created_at", suite.get("created_at")),
    ]
    app = dig(suite, "app", "name") or dig(suite, "app", "slug") or ""
    branch = suite.get("head_branch")
    return {
        "type": type_,
        "action": ctx.action or "check",
        "target": {"kind": "check_suite", "id": f"{full}:{suite_id}", "name": str(app)},
        "subject": branch if isinstance(branch, str) else None,
        "outcome": outcome,
        "links": [_commit(suite.get("head_sha")), *_listed_changes(ctx, suite.get("pull_requests"))],
    }


def _member(ctx: _Ctx) -> dict[str, Any]:
    login = need(ctx.payload, "member", "login")
    action = ctx.action or "added"
    return {
        "type": f"access.member.{slug(action)}",
        "action": action,
        "target": ctx.repo_target(),
        "subject": login,
        "diff": _changes_diff(ctx.payload.get("changes"), ctx.payload.get("member")),
    }


def _team_target(ctx: _Ctx, team: dict[str, Any]) -> dict[str, Any]:
    org = ctx.org_login()
    if org is None:
        raise fail(
            "missing_field", f"`{ctx.event_name}` payloads need an organization", "$.organization.login"
        )
    handle = team.get("slug") or team.get("name") or team.get("id")
    if handle is None or handle == "":
        raise fail("missing_field", "a team needs a slug, name or id", "$.team.slug")
    name = team.get("name")
    return {"kind": "team", "id": f"{org}/{handle}", "name": name if isinstance(name, str) else str(handle)}


def _membership(ctx: _Ctx) -> dict[str, Any]:
    team = need(ctx.payload, "team", kind=dict)
    login = need(ctx.payload, "member", "login")
    action = ctx.action or "added"
    return {
        "type": f"access.team.member_{slug(action)}",
        "action": action,
        "target": _team_target(ctx, team),
        "subject": login,
    }


def _team(ctx: _Ctx) -> dict[str, Any]:
    team = need(ctx.payload, "team", kind=dict)
    action = ctx.action or "edited"
    ctx.time_candidates.append(("$.team.updated_at", team.get("updated_at")))
    repo = dig(ctx.payload, "repository", "full_name")
    return {
        "type": f"access.team.{slug(action)}",
        "action": action,
        "target": _team_target(ctx, team),
        "subject": repo if isinstance(repo, str) else None,
        "diff": _changes_diff(ctx.payload.get("changes"), team),
    }


def _repository(ctx: _Ctx) -> dict[str, Any]:
    ctx.full_name()
    action = ctx.action or "edited"
    if action == "created":
        ctx.time_candidates.append(("$.repository.created_at", dig(ctx.repo, "created_at")))
    ctx.time_candidates.append(("$.repository.updated_at", dig(ctx.repo, "updated_at")))
    return {
        "type": f"repo.{slug(action)}",
        "action": action,
        "target": ctx.repo_target(),
        "diff": _changes_diff(ctx.payload.get("changes"), ctx.repo, own_name="repository"),
    }


def _branch_protection_rule(ctx: _Ctx) -> dict[str, Any]:
    full = ctx.full_name()
    rule = need(ctx.payload, "rule", kind=dict)
    pattern = need(ctx.payload, "rule", "name")
    action = ctx.action or "edited"
    if action != "deleted":
        ctx.time_candidates.append(("$.rule.updated_at", rule.get("updated_at")))
    ctx.late_candidates.append(("$.rule.updated_at", rule.get("updated_at")))
    return {
        "type": f"config.branch_protection.{slug(action)}",
        "action": action,
        "target": {"kind": "branch_protection_rule", "id": f"{full}:{pattern}", "name": pattern},
        "subject": pattern,
        "diff": _changes_diff(ctx.payload.get("changes"), rule),
    }


_ENVELOPE_KEYS = frozenset({"repository", "organization", "sender", "installation", "enterprise", "changes"})


def _generic(ctx: _Ctx) -> dict[str, Any]:
    p = ctx.payload
    type_ = f"github.{slug(ctx.event_name)}" + (f".{slug(ctx.action)}" if ctx.action else "")
    if ctx.repo is not None and isinstance(ctx.repo.get("full_name"), str):
        target = ctx.repo_target()
    elif ctx.org_login() is not None:
        login = ctx.org_login()
        target = {"kind": "org", "id": login, "name": login}
    elif dig(p, "installation", "id") is not None:
        inst = p["installation"]
        account = dig(inst, "account", "login")
        target = {
            "kind": "installation",
            "id": str(inst["id"]),
            "name": account if isinstance(account, str) else "",
        }
    else:
        login = need(p, "sender", "login")
        target = {"kind": "user", "id": login, "name": login}
    # The main object's own time, then top-level times (``status``).
    for key, value in p.items():
        if key in _ENVELOPE_KEYS or not isinstance(value, dict):
            continue
        for field in ("updated_at", "submitted_at", "created_at", "timestamp"):
            ctx.time_candidates.append((f"$.{key}.{field}", value.get(field)))
    ctx.time_candidates += [("$.updated_at", p.get("updated_at")), ("$.created_at", p.get("created_at"))]
    ctx.late_candidates.append(("$.installation.updated_at", dig(p, "installation", "updated_at")))
    # Obvious strong keys, wherever this kind of payload keeps them.
    links: list[str | None] = [_commit(p.get("sha"))]
    number = dig(p, "pull_request", "number")
    if isinstance(number, int) and not isinstance(number, bool) and ctx.repo is not None:
        links.append(f"change:{ctx.full_name()}#{number}")
    links.append(_commit(dig(p, "merge_group", "head_sha")))
    run = p.get("workflow_run")
    if isinstance(run, dict):
        links += [_commit(run.get("head_sha")), *_listed_changes(ctx, run.get("pull_requests"))]
    if dig(p, "deployment", "id") is not None:
        links.append(f"deploy:{p['deployment']['id']}")
    state = p.get("state")
    outcome = "failure" if isinstance(state, str) and state in _FAILED else "success"
    if isinstance(state, str) and state == "pending":
        outcome = "unknown"
    return {
        "type": type_,
        "action": ctx.action or slug(ctx.event_name),
        "target": target,
        "outcome": outcome,
        "links": links,
    }


_HANDLERS: dict[str, Handler] = {
    "push": _push,
    "create": _ref_event("create"),
    "delete": _ref_event("delete"),
    "pull_request": _pull_request,
    "pull_request_review": _pull_request_review,
    "release": _release,
    "deployment": _deployment,
    "deployment_status": _deployment_status,
    "workflow_run": _workflow_run,
    "workflow_job": _workflow_job,
    "check_run": _check_run,
    "check_suite": _check_suite,
    "member": _member,
    "membership": _membership,
    "team": _team,
    "repository": _repository,
    "branch_protection_rule": _branch_protection_rule,
}

#: Event names (``X-GitHub-Event``) with a dedicated mapping; all others are generic.
HANDLED_EVENTS = frozenset(_HANDLERS)


# --------------------------------------------------------------------------------------------


def _actor(payload: dict[str, Any]) -> dict[str, Any]:
    need(payload, "sender", kind=dict)
    login = need(payload, "sender", "login")
    sender_type = dig(payload, "sender", "type")
    if sender_type == "Bot" or login.endswith("[bot]"):
        kind = "service"
    elif sender_type in (None, "User"):
        kind = "human"
    else:
        kind = "unknown"
    return {
        "id": f"github:{login}",
        "display": login,
        "kind": kind,
        "principal": f"github:{login}",
        "verified": True,
        "assurance": "authenticated",
    }


def _source(ctx: _Ctx) -> str:
    p = ctx.payload
    for candidate in (
        dig(p, "repository", "full_name"),
        ctx.org_login(),
        dig(p, "installation", "account", "login"),
        dig(p, "sender", "login"),
    ):
        if isinstance(candidate, str) and candidate:
            return f"github://{candidate}"
    return "github://github.com"


def to_events(
    payload: Any,
    *,
    event_name: str,
    delivery_id: str | None = None,
    scope: str,
    received_at: datetime | None = None,
) -> list[Event]:
    """The change events of one GitHub webhook delivery (always exactly one; see module doc)."""
    payload = require_dict(payload, "$", "a webhook payload object")
    if not isinstance(event_name, str) or not event_name.strip():
        raise fail("invalid_value", "the X-GitHub-Event name is required", "event_name", event_name)
    if delivery_id is not None and (not isinstance(delivery_id, str) or not delivery_id.strip()):
        raise fail("invalid_value", "a delivery id must be a non-empty string", "delivery_id", delivery_id)
    event_name = event_name.strip()
    ctx = _Ctx(payload, event_name)
    actor = _actor(payload)
    handler = _HANDLERS.get(event_name, _generic)
    try:
        fields = handler(ctx)
    except DecodeError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a shape no handler foresaw
        raise fail("invalid_value", f"unexpected `{event_name}` payload shape: {exc!r}", "$") from None

    candidates = list(ctx.time_candidates)
    if received_at is not None:
        candidates.append(("received_at", as_utc(received_at, "received_at")))
    candidates += ctx.late_candidates
    candidates += [
        ("$.repository.updated_at", dig(ctx.repo, "updated_at")),
        ("$.repository.pushed_at", dig(ctx.repo, "pushed_at")),
    ]
    found = first_time(candidates)
    if found is None:
        raise fail(
            "missing_field",
            f"`{event_name}` payload carries no usable timestamp; pass received_at (the delivery time)",
            "received_at",
        )
    ident = (
        event_id("github", delivery_id.strip())
        if delivery_id
        else event_id("github", event_name, canonical_digest(payload))
    )
    envelope = {
        "id": ident,
        "source": _source(ctx),
        "type": fields["type"],
        "time": found[1],
        "scope": scope,
        "actor": actor,
        "target": fields["target"],
        "action": fields["action"],
        "outcome": fields.get("outcome", "success"),
        "links": fields.get("links", []),
        "raw": redact(payload),
    }
    if fields.get("subject"):
        envelope["subject"] = fields["subject"]
    if fields.get("diff"):
        envelope["diff"] = fields["diff"]
    return [build(envelope)]
