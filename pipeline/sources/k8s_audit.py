"""Kubernetes API-server audit events -> change events (pure part of the Kubernetes source).

Accepts ``audit.k8s.io/v1`` and ``v1beta1`` ``Event`` objects and the older format without
``apiVersion`` (which carries ``timestamp`` and ``metadata.creationTimestamp``).
:func:`split_records` unpacks an ``EventList`` (``items``), a JSON array or a single event;
:func:`to_events` maps one audit event to one envelope.

Types
-----
=======================================================  =====================================
pods/exec, pods/attach, pods/portforward                 ``k8s.exec``, ``k8s.attach``,
                                                         ``k8s.portforward``
configmaps create/update/patch/delete/deletecollection   ``config.changed`` (action = verb)
secrets create/update/patch/delete/deletecollection      ``config.secret_changed``
RBAC (``rbac.authorization.k8s.io``) writes, bind,       ``access.rbac.<verb>``
escalate
deployments/statefulsets/daemonsets create/update/patch  ``deploy.updated`` (action = verb)
the same, delete/deletecollection                        ``deploy.deleted``
the same, ``scale`` subresource update/patch             ``deploy.scaled``
any other resource request                               ``k8s.<resource>[.<subresource>].<verb>``
non-resource request (``/healthz``...)                   ``k8s.nonresource.<verb>``
=======================================================  =====================================

Id: ``event_id("k8s-audit", auditID)``. The API server writes one record per *stage* of a
request (``RequestReceived``, ``ResponseStarted``, ``ResponseComplete``, ``Panic``), all with the
same ``auditID``; they become envelopes with the **same id**, and the caller keeps the first
(dedup by id, as everywhere). To make the duplicates interchangeable, ``time`` is the
stage-independent ``requestReceivedTimestamp`` (then ``stageTimestamp``, the old format's
``timestamp``, ``metadata.creationTimestamp``). Their ``outcome`` may still differ: a
``RequestReceived`` record has no response yet and says ``unknown``.

Links: ``request:<auditID>``; for workloads, ``commit:<sha>`` for every 7-40 hex-digit token
(with at least one letter and one digit, so build numbers and dates are not taken) found in a
container image tag (``registry/app:1.4-3f9c2ab``, ``app:sha-<sha>``) or in an annotation or
label that carries provenance: ``kubernetes.io/change-cause``, ``app.kubernetes.io/version``,
any key containing ``commit``, ``sha``, ``revision`` or ``git``. Short shas are linked as found;
they join full-sha links only if the correlator matches prefixes.

Actor: ``user.username``; an ``impersonatedUser`` is the actor (``id``/``display``) while
``principal`` keeps the real, authenticated user (``k8s:<username>``); both stay in ``raw``.
``kind`` is ``service`` for ``system:serviceaccount:*`` and other ``system:*`` users,
``unknown`` for ``system:anonymous``, ``human`` otherwise. ``assurance`` is ``authenticated``
(``verified``), except for anonymous requests (``system:anonymous`` or the
``system:unauthenticated`` group): ``none``.

Target: kind ``k8s.<resource>`` (plus the API group for custom resources,
``k8s.certificates.cert-manager.io``), id ``<namespace>/<name>`` or ``<name>`` for cluster-scoped
objects; a created object named by the server (``generateName``) takes its name from the
response. Outcome: ``responseStatus.code`` >= 400 is ``failure``, otherwise ``success``;
without a response status ``unknown``. ``source`` is ``k8s-audit://<cluster>`` when the caller
names the cluster, else ``k8s-audit``.

Secrets: metadata only. ``data`` and ``stringData`` are removed from every Secret (and
SecretList item) in ``requestObject``/``responseObject``, from patches of secrets (merge patches
lose those keys, JSON-patch operations on them lose their ``value``), and a Secret's
``kubectl.kubernetes.io/last-applied-configuration`` annotation (which embeds the data) is
replaced by its hash. There is no diff for secrets. Everything else in ``raw`` goes through
:func:`~pipeline.sources.redact.redact`, so ConfigMap values that hold credentials
(``password = ...`` in a properties file) are hashed.

Diff (:func:`~pipeline.sources.diff.structured_diff`) for configmaps (``data``,
``binaryData``), workloads (``metadata.labels``, ``metadata.annotations`` without the
last-applied copy, ``spec``) and RBAC objects (``rules``, ``aggregationRule``, ``roleRef``,
``subjects``): create = nothing -> object; delete = object -> nothing when the response holds
the object; update = the new object with ``before_known: false`` (an audit record does not
carry the old object); patch = the patch document's paths and values, ``before_known: false``.
The diff needs ``level: Request`` or higher; at ``Metadata`` level there is none.

Malformed input raises :class:`pipeline.errors.DecodeError` naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.model import Event, event_id
from pipeline.sources._normalize import build, dig, fail, first_time, need, require_dict, slug
from pipeline.sources.diff import structured_diff
from pipeline.sources.redact import redact, redact_value

__all__ = ["split_records", "to_events"]

_MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_WORKLOADS = frozenset({"deployments", "statefulsets", "daemonsets"})
_RBAC_GROUP = "rbac.authorization.k8s.io"
_RBAC_RESOURCES = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})
_POD_STREAMS = frozenset({"exec", "attach", "portforward"})
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_BUILTIN_GROUP_SUFFIXES = (".k8s.io",)
_HEX_TOKEN = re.compile(r"(?<![0-9A-Fa-f])[0-9a-fA-F]{7,40}(?![0-9A-Fa-f])")
_PROVENANCE_KEY = re.compile(r"commit|sha|revision|git|(^|/)version$|change-cause", re.I)


def split_records(obj: Any) -> list[dict[str, Any]]:
    """The audit events in ``obj``: an ``EventList`` (``items``), a list, or a single event."""
    items: Any
    if isinstance(obj, list):
        items, where = obj, "$"
    elif isinstance(obj, dict):
        if obj.get("kind") == "EventList" or ("items" in obj and "auditID" not in obj):
            items, where = obj.get("items"), "$.items"
            if items is None:
                return []
            if not isinstance(items, list):
                raise fail("wrong_type", "expected an array of audit events", where, type(items).__name__)
        else:
            return [obj]
    else:
        raise fail("wrong_type", f"expected an audit Event or EventList, got {type(obj).__name__}", "$")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail(
                "wrong_type", f"expected an audit event object, got {type(item).__name__}", f"{where}[{i}]"
            )
    return list(items)


# --------------------------------------------------------------------------------------------
# secrets


def _strip_secret(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
    annotations = dig(out, "metadata", "annotations")
    if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
        out["metadata"] = {
            **out["metadata"],
            "annotations": {**annotations, _LAST_APPLIED: redact_value(annotations[_LAST_APPLIED])},
        }
    return out


def _scrub_secrets(node: Any) -> Any:
    """Remove Secret payloads from any object tree (Secrets, SecretLists, embedded lists)."""
    if isinstance(node, dict):
        if node.get("kind") == "Secret":
            node = _strip_secret(node)
        return {k: _scrub_secrets(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_scrub_secrets(v) for v in node]
    return node


def _scrub_secret_request(obj: Any) -> Any:
    """A request/response body of a ``secrets`` call, whatever its shape (object, patch, list)."""
    if isinstance(obj, dict):
        if isinstance(obj.get("items"), list):
            obj = {**obj, "items": [_strip_secret(i) if isinstance(i, dict) else i for i in obj["items"]]}
        return _scrub_secrets(_strip_secret(obj))
    if isinstance(obj, list):  # JSON patch: keep the operations, drop values that touch data
        ops = []
        for op in obj:
            if isinstance(op, dict):
                path = str(op.get("path", ""))
                if path in ("", "/") or path.startswith(("/data", "/stringData", "/metadata/annotations")):
                    op = {k: v for k, v in op.items() if k != "value"}
            ops.append(op)
        return ops
    return obj


# --------------------------------------------------------------------------------------------
# commits


def _shas(text: str) -> list[str]:
    out = []
    for m in _HEX_TOKEN.finditer(text):
        token = m.group(0).lower()
        if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
            out.append(token)
    return out


def _image_tag(image: str) -> str:
    image = image.split("@", 1)[0]
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[colon + 1 :] if colon > slash else ""


def _commit_links(objs: list[Any]) -> list[str]:
    found: list[str] = []

    def scan_meta(meta: Any) -> None:
        if not isinstance(meta, dict):
            return
        for field in ("annotations", "labels"):
            values = meta.get(field)
            if isinstance(values, dict):
                for key, value in values.items():
                    if (
                        isinstance(key, str)
                        and isinstance(value, str)
                        and key != _LAST_APPLIED
                        and _PROVENANCE_KEY.search(key)
                    ):
                        found.extend(_shas(value))

    def scan_pod_spec(spec: Any) -> None:
        if not isinstance(spec, dict):
            return
        for field in ("containers", "initContainers", "ephemeralContainers"):
            containers = spec.get(field)
            if isinstance(containers, list):
                for c in containers:
                    image = c.get("image") if isinstance(c, dict) else None
                    if isinstance(image, str):
                        found.extend(_shas(_image_tag(image)))

    for obj in objs:
        if not isinstance(obj, dict):
            continue
        scan_meta(obj.get("metadata"))
        scan_meta(dig(obj, "spec", "template", "metadata"))
        scan_pod_spec(dig(obj, "spec", "template", "spec"))
    return [f"commit:{sha}" for sha in dict.fromkeys(found)]


# --------------------------------------------------------------------------------------------
# diff


def _subset(resource: str, obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    keys: tuple[str, ...]
    if resource == "configmaps":
        keys = ("data", "binaryData")
    elif resource in _RBAC_RESOURCES:
        keys = ("rules", "aggregationRule", "roleRef", "subjects")
    elif resource in _WORKLOADS:
        keys = ("spec",)
    else:
        return None
    out = {k: obj[k] for k in keys if k in obj}
    if resource in _WORKLOADS:
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            picked = {}
            if isinstance(meta.get("labels"), dict):
                picked["labels"] = meta["labels"]
            if isinstance(meta.get("annotations"), dict):
                annotations = {k: v for k, v in meta["annotations"].items() if k != _LAST_APPLIED}
                if annotations:
                    picked["annotations"] = annotations
            if picked:
                out["metadata"] = picked
    return out


def _json_patch_as_object(ops: list[Any]) -> dict[str, Any]:
    """``[{"op": "replace", "path": "/spec/replicas", "value": 3}]`` -> ``{"spec": {"replicas": 3}}``."""
    out: dict[str, Any] = {}
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/") if p]
        if not parts:
            continue
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = op.get("value") if op.get("op") != "remove" else None
    return out


def _diff(resource: str, subresource: str | None, verb: str, event: dict[str, Any]) -> dict[str, Any] | None:
    if subresource or resource == "secrets":
        return None
    request, response = event.get("requestObject"), event.get("responseObject")
    if verb == "create":
        new = _subset(
            resource, response if isinstance(response, dict) and response.get("kind") != "Status" else request
        )
        return structured_diff(None, new) if new is not None else None
    if verb == "delete":
        old = (
            _subset(resource, response)
            if isinstance(response, dict) and response.get("kind") != "Status"
            else None
        )
        return structured_diff(old, None) if old is not None else None
    if verb == "update":
        new = _subset(resource, request if isinstance(request, dict) else response)
        return structured_diff(None, new, before_known=False) if new is not None else None
    if verb == "patch":
        patch = _json_patch_as_object(request) if isinstance(request, list) else request
        new = _subset(resource, patch)
        return structured_diff(None, new, before_known=False) if new is not None else None
    return None


# --------------------------------------------------------------------------------------------


def _type(verb: str, resource: str | None, subresource: str | None, group: str) -> str:
    if resource is None:
        return f"k8s.nonresource.{slug(verb)}"
    if resource == "pods" and subresource in _POD_STREAMS:
        return f"k8s.{subresource}"
    if not subresource:
        if resource == "configmaps" and verb in _MUTATING:
            return "config.changed"
        if resource == "secrets" and verb in _MUTATING:
            return "config.secret_changed"
        if resource in _WORKLOADS and verb in ("create", "update", "patch"):
            return "deploy.updated"
        if resource in _WORKLOADS and verb in ("delete", "deletecollection"):
            return "deploy.deleted"
    if resource in _WORKLOADS and subresource == "scale" and verb in ("update", "patch"):
        return "deploy.scaled"
    if (
        resource in _RBAC_RESOURCES
        and group in (_RBAC_GROUP, "")
        and not subresource
        and (verb in _MUTATING or verb in ("bind", "escalate"))
    ):
        return f"access.rbac.{slug(verb)}"
    parts = [slug(resource)] + ([slug(subresource)] if subresource else []) + [slug(verb)]
    return "k8s." + ".".join(parts)


def _target_kind(resource: str, group: str) -> str:
    if group and "." in group and not group.endswith(_BUILTIN_GROUP_SUFFIXES):
        return f"k8s.{resource}.{group}"
    return f"k8s.{resource}"


def _name(event: dict[str, Any], ref: dict[str, Any]) -> str | None:
    for candidate in (
        ref.get("name"),
        dig(event, "responseObject", "metadata", "name"),
        dig(event, "requestObject", "metadata", "name"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    generate = dig(event, "requestObject", "metadata", "generateName")
    return f"{generate}*" if isinstance(generate, str) and generate else None


def _actor(event: dict[str, Any]) -> dict[str, Any]:
    need(event, "user", kind=dict)
    real = need(event, "user", "username")
    imp = dig(event, "impersonatedUser", "username")
    who = imp if isinstance(imp, str) and imp else real
    groups = dig(event, "user", "groups", default=[])
    groups = groups if isinstance(groups, list) else []
    anonymous = real == "system:anonymous" or "system:unauthenticated" in groups
    if who == "system:anonymous":
        kind = "unknown"
    elif who.startswith("system:"):
        kind = "service"
    else:
        kind = "human"
    return {
        "id": f"k8s:{who}",
        "display": who if who == real else f"{who} (impersonated by {real})",
        "kind": kind,
        "principal": f"k8s:{real}",
        "verified": not anonymous,
        "assurance": "none" if anonymous else "authenticated",
    }


def _outcome(event: dict[str, Any]) -> str:
    if event.get("stage") == "Panic":
        return "failure"
    code = dig(event, "responseStatus", "code")
    if isinstance(code, int) and not isinstance(code, bool):
        return "failure" if code >= 400 else "success"
    return "unknown"


def to_events(audit_event: Any, *, scope: str, cluster: str | None = None) -> list[Event]:
    """The change event of one Kubernetes audit ``Event`` (always exactly one)."""
    event = require_dict(audit_event, "$", "a Kubernetes audit Event object")
    kind = event.get("kind")
    if kind is not None and kind != "Event":
        raise fail("invalid_value", "not an audit Event (use split_records for an EventList)", "$.kind", kind)
    audit_id = need(event, "auditID")
    verb = need(event, "verb")
    ref = event.get("objectRef")
    if ref is not None:
        ref = require_dict(ref, "$.objectRef")
    resource = need(event, "objectRef", "resource").lower() if ref is not None else None
    subresource = ref.get("subresource") if ref is not None else None
    if subresource is not None and not isinstance(subresource, str):
        raise fail("wrong_type", "expected a string", "$.objectRef.subresource", subresource)
    subresource = (subresource.lower() or None) if subresource else None
    group = (ref.get("apiGroup") or "") if ref is not None else ""
    if not isinstance(group, str):
        raise fail("wrong_type", "expected a string", "$.objectRef.apiGroup", group)
    actor = _actor(event)

    found = first_time(
        [
            ("$.requestReceivedTimestamp", event.get("requestReceivedTimestamp")),
            ("$.stageTimestamp", event.get("stageTimestamp")),
            ("$.timestamp", event.get("timestamp")),
            ("$.metadata.creationTimestamp", dig(event, "metadata", "creationTimestamp")),
        ]
    )
    if found is None:
        raise fail(
            "missing_field",
            "no requestReceivedTimestamp, stageTimestamp or timestamp",
            "$.requestReceivedTimestamp",
        )

    uri = event.get("requestURI")
    path = uri.split("?", 1)[0] if isinstance(uri, str) and uri else "/"
    if resource is None or ref is None:
        target = {"kind": "k8s.nonresource", "id": path, "name": path}
    else:
        namespace = ref.get("namespace") if isinstance(ref.get("namespace"), str) else ""
        if resource == "namespaces":  # a namespace's objectRef names itself as its namespace
            namespace = ""
        name = _name(event, ref)
        if name is None:
            ident = f"{namespace}/*" if namespace else path
        else:
            ident = f"{namespace}/{name}" if namespace else name
        target = {"kind": _target_kind(resource, group), "id": ident, "name": name or ""}

    raw = dict(event)
    for field in ("requestObject", "responseObject"):
        if field in raw:
            raw[field] = (
                _scrub_secret_request(raw[field]) if resource == "secrets" else _scrub_secrets(raw[field])
            )
    type_ = _type(verb, resource, subresource, group)
    links = [f"request:{audit_id}"]
    if resource in _WORKLOADS:
        request = event.get("requestObject")
        if isinstance(request, list):
            request = _json_patch_as_object(request)
        links += _commit_links([request, event.get("responseObject")])
    envelope: dict[str, Any] = {
        "id": event_id("k8s-audit", audit_id),
        "source": f"k8s-audit://{cluster}" if cluster else "k8s-audit",
        "type": type_,
        "time": found[1],
        "scope": scope,
        "actor": actor,
        "target": target,
        "action": subresource if type_ in ("k8s.exec", "k8s.attach", "k8s.portforward") else verb,
        "outcome": _outcome(event),
        "links": links,
        "raw": redact(raw),
    }
    if resource is not None:
        diff = _diff(
            resource, subresource, verb, {k: raw.get(k) for k in ("requestObject", "responseObject")}
        )
        if diff is not None and diff.get("changed"):
            envelope["diff"] = diff
    return [build(envelope)]
