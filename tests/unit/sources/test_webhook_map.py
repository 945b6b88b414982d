"""Declarative webhook mappings (JMESPath): the shipped Argo CD and Jenkins mappings on the
payloads those tools document, errors naming the field, and the webhook receiver's refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.cli.ingest_http import webhook_kind
from pipeline.errors import ConfigError, DecodeError
from pipeline.model import decode, event_id
from pipeline.sources.http_auth import bearer_check, hash_token, request_authorizer
from pipeline.sources.receiver import Receiver
from pipeline.sources.webhook_map import MAPPINGS_DIR, load_mapping, parse_mapping, to_events

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def argocd_body(**over: Any) -> dict[str, Any]:
    """What the template in mappings/argocd.yaml renders for a finished sync."""
    body = {"app": "api", "namespace": "argocd", "project": "default", "uid": "9a1e-77",
            "phase": "Succeeded", "message": "successfully synced (all tasks run)",
            "startedAt": "2026-11-27T01:24:00Z", "finishedAt": "2026-11-27T01:24:47Z", "revision": SHA,
            "initiatedBy": "carol@acme.io", "automated": "false", "health": "Healthy", "sync": "Synced",
            "repoURL": "https://github.com/acme/api",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "prod"},
            "url": "https://argocd.acme.io/applications/api"}
    body.update(over)
    return body


def jenkins_body(phase: str, status: str | None = None, **build: Any) -> dict[str, Any]:
    """The Notification plugin's documented JSON (its README's example job)."""
    b: dict[str, Any] = {"full_url": "http://ci.acme.io/job/asgard/18/", "number": 18, "queue_id": 1,
                         "timestamp": 1764206350000, "duration": 95000, "phase": phase, "url": "job/asgard/18/",
                         "scm": {"url": "https://github.com/acme/asgard.git", "branch": "origin/main", "commit": SHA},
                         "parameters": {"DEPLOY_TOKEN": "ghp_" + "a1B2" * 9}, "log": "", "notes": "",
                         "artifacts": {}}
    if status is not None:
        b["status"] = status
    b.update(build)
    return {"name": "asgard", "display_name": "asgard", "url": "job/asgard/", "build": b}


def test_shipped_mappings_load() -> None:
    assert {p.stem for p in MAPPINGS_DIR.glob("*.yaml")} >= {"argocd", "jenkins"}
    for name in ("argocd", "jenkins"):
        assert load_mapping(name).name == name


def test_argocd_sync_succeeded_by_a_user() -> None:
    [e] = to_events(load_mapping("argocd"), argocd_body(), scope="acme")
    assert e.id == event_id("webhook:argocd", "argocd", "api", "2026-11-27T01:24:00Z")
    assert (e.type, e.action, e.outcome) == ("deploy.succeeded", "sync", "success")
    assert e.time == datetime(2026, 11, 27, 1, 24, 47, tzinfo=UTC)
    assert (e.actor.id, e.actor.kind, e.actor.assurance) == ("carol@acme.io", "human", "authenticated")
    assert (e.target.kind, e.target.id, e.target.service, e.target.environment) == (
        "argocd.application", "argocd/api", "api", "prod")
    assert e.links == (f"commit:{SHA}", f"deploy:argocd:argocd/api:{SHA}")
    assert e.source == "argocd://argocd/api" and e.subject == "https://argocd.acme.io/applications/api"


@pytest.mark.parametrize(("phase", "type_", "outcome"), [
    ("Failed", "deploy.failed", "failure"), ("Error", "deploy.failed", "failure"),
    ("Running", "deploy.started", "unknown"),
])
def test_argocd_other_phases(phase: str, type_: str, outcome: str) -> None:
    [e] = to_events(load_mapping("argocd"), argocd_body(phase=phase), scope="acme")
    assert (e.type, e.outcome) == (type_, outcome)


def test_argocd_automated_sync_is_the_controller() -> None:
    [e] = to_events(load_mapping("argocd"), argocd_body(initiatedBy="", automated="true"), scope="acme")
    assert (e.actor.id, e.actor.kind) == ("argocd-application-controller", "service")


@pytest.mark.parametrize(("phase", "status", "outcome", "offset_ms"), [
    ("STARTED", None, "unknown", 0),
    ("COMPLETED", "SUCCESS", "success", 95000),
    ("FINALIZED", "UNSTABLE", "failure", 95000),
    ("COMPLETED", "ABORTED", "failure", 95000),
])
def test_jenkins_build_phases(phase: str, status: str | None, outcome: str, offset_ms: int) -> None:
    [e] = to_events(load_mapping("jenkins"), jenkins_body(phase, status), scope="acme")
    assert e.type == f"ci.run.{phase.lower()}" and e.outcome == outcome
    assert e.id == event_id("webhook:jenkins", "asgard", "18", phase)
    assert e.time_us == (1764206350000 + offset_ms) * 1000
    assert e.links == (f"commit:{SHA}",) and e.target.id == "asgard" and e.source_seq == "18"
    assert e.raw["build"]["parameters"]["DEPLOY_TOKEN"].startswith("redacted:hmac-sha256:v1:")


def test_a_body_missing_a_required_value_names_the_field() -> None:
    body = jenkins_body("COMPLETED", "SUCCESS")
    del body["build"]["number"]
    with pytest.raises(DecodeError) as info:
        to_events(load_mapping("jenkins"), body, scope="acme")
    assert info.value.reason == "missing_field" and info.value.field == "id[1]"
    with pytest.raises(DecodeError) as info:
        to_events(load_mapping("argocd"), argocd_body(finishedAt="soon", startedAt="never"), scope="acme")
    assert info.value.field == "time"


MINIMAL = {"name": "bot", "id": "id", "time": "at", "type": "'deploy.done'", "target": {"kind": "'svc'", "id": "svc"}}


@pytest.mark.parametrize(("change", "message"), [
    ({"time": "at[["}, "mapping field time: 'at[[' is not a JMESPath expression"),
    ({"colour": "x"}, "unknown field(s) colour"),
    ({"target": {"kind": "'svc'"}}, "mapping field target: id required"),
    ({"links": {"ticket": "t"}}, "links keys are link types"),
    ({"outcome_values": {"OK": "great"}}, "outcome_values"),
    ({"name": "Bot Name"}, "name 'Bot Name'"),
    ({"actor": {"email": "e"}}, "unknown key(s) email"),
])
def test_bad_mappings_are_config_errors_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_mapping({**MINIMAL, **change})


def test_links_lists_diff_and_custom_functions() -> None:
    m = parse_mapping({**MINIMAL, "type": "join('.', ['deploy', lower(state)])",
                       "links": {"commit": "commits", "trace": "trace_id(tp)"},
                       "diff": {"before": "old", "after": "new"}})
    body = {"id": 7, "at": 1764206350, "state": "DONE", "svc": "api", "commits": ["ABCDEF1", "1234567"],
            "tp": f"00-{'ab' * 16}-{'cd' * 8}-01", "old": {"replicas": 2}, "new": {"replicas": 3}}
    [e] = to_events(m, body, scope="acme")
    assert e.type == "deploy.done"
    assert e.links == ("commit:abcdef1", "commit:1234567", f"trace:{'ab' * 16}")
    assert e.diff == {"changed": ["replicas"], "before": {"replicas": 2}, "after": {"replicas": 3}}


# -- the webhook receiver ----------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.visible: list[tuple[str, bytes, dict[str, bytes]]] = []
        self.open: list[tuple[str, bytes, dict[str, bytes]]] = []

    def send(self, topic, value, key, headers=()):  # type: ignore[no-untyped-def]
        self.open.append((topic, value, dict(headers)))

    def commit(self, cursor: bytes) -> None:
        self.visible, self.open = self.visible + self.open, []

    def last_cursor(self) -> None:
        return None


def test_webhook_receiver_accepts_json_with_a_token_and_refuses_the_rest() -> None:
    sink = Sink()
    auth = request_authorizer(bearer=bearer_check([hash_token("tok")]))
    r = Receiver(webhook_kind(auth, load_mapping("jenkins"), "acme"), lambda: sink, topic="c", dlq="d")
    body = orjson.dumps(jenkins_body("COMPLETED", "SUCCESS"))
    ok = {"Authorization": "Bearer tok", "Content-Type": "application/json"}
    assert r.handle(body, {"Content-Type": "application/json"}).status == 401
    assert r.handle(body, {**ok, "Content-Type": "application/x-www-form-urlencoded"}).status == 415
    assert sink.visible == [] and sink.open == []
    assert r.handle(body, ok).status == 200
    [(topic, value, _)] = sink.visible
    assert topic == "c" and decode(value).type == "ci.run.completed"
    bad = r.handle(b'{"name": "asgard"}', ok)
    assert (bad.status, bad.body["error"]) == (400, "missing_field")
    assert [t for t, _, _ in sink.visible] == ["c", "d"]
