"""Kubernetes audit normalizer (pipeline/sources/k8s_audit.py) on hand-written audit events:
types, actor and impersonation, Secret stripping, ConfigMap redaction, commit links, stages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.errors import DecodeError
from pipeline.model import decode, encode, event_id
from pipeline.sources import k8s_audit

SHA = "3f9c2ab7d1e04b5a9c8f6e2d1b0a9f8e7d6c5b4a"


def audit(verb: str = "create", resource: str | None = "configmaps", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "0b5e6f7a-1111-2222-3333-444455556666",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/shop/configmaps",
        "verb": verb,
        "user": {"username": "alice@acme.io", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.1"],
        "responseStatus": {"metadata": {}, "code": 201},
        "requestReceivedTimestamp": "2024-06-01T12:00:00.123456Z",
        "stageTimestamp": "2024-06-01T12:00:00.223456Z",
    }
    if resource is not None:
        event["objectRef"] = {
            "resource": resource,
            "namespace": "shop",
            "name": "app-config",
            "apiVersion": "v1",
        }
    event.update(extra)
    return event


def one(record: dict[str, Any], **kw: Any) -> Any:
    (event,) = k8s_audit.to_events(record, scope="acme", **kw)
    assert decode(encode(event)) == event
    return event


def test_configmap_create_is_config_changed_with_redacted_values() -> None:
    obj = {"kind": "ConfigMap", "metadata": {"name": "app-config"},
           "data": {"DB_MAX_CONNECTIONS": "50", "DB_PASSWORD": "hunter2", "app.properties": "token = abc123\nx=1"}}  # fmt: skip
    event = one(audit(requestObject=obj, responseObject=obj))
    assert event.type == "config.changed" and event.action == "create" and event.outcome == "success"
    assert event.id == event_id("k8s-audit", "0b5e6f7a-1111-2222-3333-444455556666")
    assert event.links == ("request:0b5e6f7a-1111-2222-3333-444455556666",)
    assert event.target.kind == "k8s.configmaps" and event.target.id == "shop/app-config"
    assert event.time == datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert event.diff["changed"] == ["data.DB_MAX_CONNECTIONS", "data.DB_PASSWORD", 'data["app.properties"]']
    assert event.diff["after"]["data.DB_MAX_CONNECTIONS"] == "50"
    text = encode(event).decode()
    assert "hunter2" not in text and "abc123" not in text
    assert event.raw["requestObject"]["data"]["DB_PASSWORD"].startswith("redacted:hmac-sha256:v1:")
    assert event.raw["requestObject"]["data"]["app.properties"].endswith("\nx=1")


def test_secrets_keep_metadata_only() -> None:
    applied = json.dumps({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}})
    secret = {
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied},
        },
        "data": {"password": "aHVudGVyMg=="},
        "stringData": {"token": "plain-token"},
        "type": "Opaque",
    }
    record = audit(objectRef={"resource": "secrets", "namespace": "shop", "name": "db"},
                   requestObject=secret, responseObject=secret)  # fmt: skip
    event = one(record)
    assert event.type == "config.secret_changed"
    assert event.diff is None
    for field in ("requestObject", "responseObject"):
        body = event.raw[field]
        assert "data" not in body and "stringData" not in body
        assert body["type"] == "Opaque" and body["metadata"]["name"] == "db"
        annotation = body["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        assert annotation.startswith("redacted:hmac-sha256:v1:")
    text = encode(event).decode()
    assert "aHVudGVyMg" not in text and "plain-token" not in text
    assert record["requestObject"]["data"] == {"password": "aHVudGVyMg=="}  # the input is not modified


def test_secret_patches_and_lists_lose_their_data() -> None:
    ref = {"resource": "secrets", "namespace": "shop", "name": "db"}
    merge = one(
        audit(
            verb="patch",
            objectRef=ref,
            requestObject={"data": {"password": "eA=="}, "metadata": {"labels": {"a": "b"}}},
        )
    )
    assert merge.raw["requestObject"] == {"metadata": {"labels": {"a": "b"}}}
    json_patch = [{"op": "replace", "path": "/data/password", "value": "eA=="},
                  {"op": "add", "path": "/metadata/labels/a", "value": "b"}]  # fmt: skip
    patched = one(audit(verb="patch", objectRef=ref, requestObject=json_patch))
    assert patched.raw["requestObject"] == [{"op": "replace", "path": "/data/password"}, json_patch[1]]
    listing = {
        "kind": "SecretList",
        "items": [{"kind": "Secret", "metadata": {"name": "db"}, "data": {"p": "eA=="}}],
    }
    listed = one(
        audit(verb="list", objectRef={"resource": "secrets", "namespace": "shop"}, responseObject=listing)
    )
    assert listed.type == "k8s.secrets.list"
    assert listed.raw["responseObject"]["items"] == [{"kind": "Secret", "metadata": {"name": "db"}}]
    # a Secret embedded anywhere else is stripped too
    other = one(
        audit(verb="create", resource="configmaps", responseObject={"kind": "Secret", "data": {"p": "eA=="}})
    )
    assert "data" not in other.raw["responseObject"]


def test_workload_update_links_commits_from_image_tags_and_annotations() -> None:
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": f"deploy {SHA[:7]} by ci",
                                                    "deployment.kubernetes.io/revision": "1234567"}},
        "spec": {"replicas": 3, "template": {
            "metadata": {"annotations": {"git-commit": SHA}},
            "spec": {"containers": [{"name": "web", "image": "ghcr.io/acme/web:1.4-5e6f7a8b"},
                                    {"name": "sidecar", "image": "envoyproxy/envoy:v1.29.0"},
                                    {"name": "digest", "image": "busybox@sha256:" + "ab" * 32}]}}},
    }  # fmt: skip
    record = audit(verb="update", objectRef={"resource": "deployments", "apiGroup": "apps", "namespace": "shop",
                                             "name": "web"}, requestObject=deployment)  # fmt: skip
    event = one(record)
    assert event.type == "deploy.updated" and event.action == "update"
    assert set(event.links) == {"request:0b5e6f7a-1111-2222-3333-444455556666", f"commit:{SHA[:7]}",
                                f"commit:{SHA}", "commit:5e6f7a8b"}  # fmt: skip
    assert event.diff["before_known"] is False
    assert "spec.replicas" in event.diff["changed"]
    scaled = one(audit(verb="patch", objectRef={"resource": "deployments", "subresource": "scale",
                                               "namespace": "shop", "name": "web"}, requestObject={"spec": {"replicas": 5}}))  # fmt: skip
    assert scaled.type == "deploy.scaled"
    deleted = one(
        audit(verb="delete", objectRef={"resource": "statefulsets", "namespace": "shop", "name": "db"})
    )
    assert deleted.type == "deploy.deleted"


def test_exec_attach_rbac_and_generic_types() -> None:
    pod = {"resource": "pods", "namespace": "shop", "name": "web-1", "subresource": "exec"}
    assert one(audit(objectRef=pod)).type == "k8s.exec"
    assert one(audit(objectRef={**pod, "subresource": "attach"})).action == "attach"
    rbac = {"resource": "clusterrolebindings", "apiGroup": "rbac.authorization.k8s.io", "name": "admins"}
    event = one(audit(objectRef=rbac, requestObject={"roleRef": {"name": "cluster-admin"}, "subjects": []}))
    assert event.type == "access.rbac.create" and event.target.id == "admins"
    assert event.diff["after"] == {"roleRef.name": "cluster-admin", "subjects": []}
    assert one(audit(verb="get", objectRef=rbac)).type == "k8s.clusterrolebindings.get"
    crd = {"resource": "certificates", "apiGroup": "cert-manager.io", "namespace": "shop", "name": "tls"}
    assert one(audit(objectRef=crd)).target.kind == "k8s.certificates.cert-manager.io"
    nonresource = one(audit(verb="get", resource=None, requestURI="/healthz?verbose"))
    assert nonresource.type == "k8s.nonresource.get" and nonresource.target.id == "/healthz"
    namespace = one(audit(objectRef={"resource": "namespaces", "namespace": "foo", "name": "foo"}))
    assert namespace.target.id == "foo"


def test_actor_kinds_impersonation_and_anonymous() -> None:
    human = one(audit())
    assert (human.actor.id, human.actor.kind, human.actor.assurance) == (
        "k8s:alice@acme.io",
        "human",
        "authenticated",
    )
    sa = one(audit(user={"username": "system:serviceaccount:kube-system:replicaset-controller"}))
    assert sa.actor.kind == "service"
    node = one(audit(user={"username": "system:node:worker-1"}))
    assert node.actor.kind == "service"
    anon = one(audit(user={"username": "system:anonymous", "groups": ["system:unauthenticated"]}))
    assert (anon.actor.kind, anon.actor.assurance, anon.actor.verified) == ("unknown", "none", False)
    imp = one(audit(impersonatedUser={"username": "system:serviceaccount:shop:deployer"}))
    assert imp.actor.id == "k8s:system:serviceaccount:shop:deployer"
    assert imp.actor.principal == "k8s:alice@acme.io"
    assert imp.actor.kind == "service" and "impersonated by alice@acme.io" in imp.actor.display
    assert imp.raw["user"]["username"] == "alice@acme.io"


def test_stages_share_id_and_time_and_outcomes_follow_the_status() -> None:
    received = audit(
        stage="RequestReceived", responseStatus=None, stageTimestamp="2024-06-01T12:00:00.123456Z"
    )
    complete = audit(stage="ResponseComplete", stageTimestamp="2024-06-01T12:00:01.000000Z")
    a, b = one(received), one(complete)
    assert a.id == b.id and a.time == b.time
    assert a.outcome == "unknown" and b.outcome == "success"
    assert one(audit(responseStatus={"code": 403, "reason": "Forbidden"})).outcome == "failure"
    assert one(audit(responseStatus={"code": 101})).outcome == "success"
    assert one(audit(stage="Panic")).outcome == "failure"


def test_old_format_without_api_version_uses_timestamp() -> None:
    record = audit()
    for key in ("apiVersion", "requestReceivedTimestamp", "stageTimestamp"):
        record.pop(key)
    record["timestamp"] = "2018-10-26T09:51:20Z"
    assert one(record).time == datetime(2018, 10, 26, 9, 51, 20, tzinfo=UTC)


def test_generated_names_come_from_the_response() -> None:
    ref = {"resource": "pods", "namespace": "shop"}
    named = one(audit(objectRef=ref, requestObject={"metadata": {"generateName": "web-"}},
                      responseObject={"metadata": {"name": "web-x7k2p"}}))  # fmt: skip
    assert named.target.id == "shop/web-x7k2p"
    unnamed = one(audit(objectRef=ref, requestObject={"metadata": {"generateName": "web-"}}))
    assert unnamed.target.id == "shop/web-*"


def test_cluster_names_the_source() -> None:
    assert one(audit(), cluster="prod-eu").source == "k8s-audit://prod-eu"
    assert one(audit()).source == "k8s-audit"


def test_split_records() -> None:
    a, b = audit(auditID="a"), audit(auditID="b")
    assert k8s_audit.split_records(
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [a, b]}
    ) == [a, b]
    assert k8s_audit.split_records({"kind": "EventList", "items": None}) == []
    assert k8s_audit.split_records([a, b]) == [a, b]
    assert k8s_audit.split_records(a) == [a]
    with pytest.raises(DecodeError) as info:
        k8s_audit.split_records({"kind": "EventList", "items": [a, "junk"]})
    assert info.value.field == "$.items[1]"
    with pytest.raises(DecodeError):
        k8s_audit.split_records("junk")
    with pytest.raises(DecodeError):
        k8s_audit.split_records({"kind": "EventList", "items": {"a": 1}})


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ("not an event", "$"),
        ({"kind": 0}, "$.kind"),  # the Falco fuzz regression file
        ({"kind": "EventList", "items": []}, "$.kind"),
        ({k: v for k, v in audit().items() if k != "auditID"}, "$.auditID"),
        ({**audit(), "auditID": ""}, "$.auditID"),
        ({k: v for k, v in audit().items() if k != "verb"}, "$.verb"),
        ({k: v for k, v in audit().items() if k != "user"}, "$.user"),
        ({**audit(), "user": {"groups": []}}, "$.user.username"),
        ({**audit(), "objectRef": "configmaps"}, "$.objectRef"),
        ({**audit(), "objectRef": {"name": "x"}}, "$.objectRef.resource"),
        ({**audit(), "objectRef": {"resource": "pods", "subresource": 5}}, "$.objectRef.subresource"),
        ({k: v for k, v in audit().items() if not k.endswith("Timestamp")}, "$.requestReceivedTimestamp"),
        (
            {**audit(), "requestReceivedTimestamp": "yesterday", "stageTimestamp": None},
            "$.requestReceivedTimestamp",
        ),
    ],
)
def test_malformed_events_raise_decode_error(record: Any, field: str) -> None:
    with pytest.raises(DecodeError) as info:
        k8s_audit.to_events(record, scope="acme")
    assert info.value.field == field, info.value.message
