"""AWS CloudTrail records -> change events (pure part of the AWS IAM/audit source).

:func:`iter_records` unpacks a CloudTrail log file (``{"Records": [...]}``), a JSON array or a
single record; :func:`csv_rows` (:func:`records_from_csv`) reads the CSV export of the OTRF "S3
honey bucket" dataset into record-shaped dicts, for ``ingest cloudtrail`` and ``rules test``. :func:`to_events` maps one record to exactly one envelope:
nothing is dropped, reads included.

Types
-----
=====================================================  ============================================
``signin`` ``ConsoleLogin``                            ``iam.login``
``sts`` ``AssumeRole``, ``AssumeRoleWithSAML``,         ``iam.role.assumed``
``AssumeRoleWithWebIdentity``, ``AssumeRoot``
``sts`` ``GetFederationToken`` / ``GetSessionToken``   ``iam.federation_token.issued`` /
                                                       ``iam.session_token.issued``
other ``sts``, ``signin`` calls                        ``iam.sts.<call>`` / ``iam.signin.<call>``
``iam`` ``<Verb><Noun>``                               ``iam.<noun>.<verb, past tense>``:
                                                       ``CreateUser`` -> ``iam.user.created``,
                                                       ``AttachRolePolicy`` ->
                                                       ``iam.role_policy.attached``,
                                                       ``UpdateAssumeRolePolicy`` ->
                                                       ``iam.assume_role_policy.updated``
``cloudtrail`` ``StopLogging``, ``DeleteTrail``,        ``config.audit.disabled``
``DeleteEventDataStore``, ``StopEventDataStoreIngestion``;
also ``ec2 DeleteFlowLogs``, ``route53resolver
DeleteResolverQueryLogConfig``, ``config
Stop/DeleteConfigurationRecorder``, ``guardduty
DeleteDetector``, ``securityhub DisableSecurityHub``
``cloudtrail`` ``StartLogging``, ``CreateTrail``;      ``config.audit.enabled``
``ec2 CreateFlowLogs``...
other ``cloudtrail`` writes (``PutEventSelectors``,    ``config.audit.changed``
``UpdateTrail``, ``PutInsightSelectors``...)
``organizations`` writes                               ``access.org.<call>``
                                                       (``access.org.leave_organization``)
any other call                                         ``aws.<service>.<call>``
                                                       (``aws.ec2.run_instances``)
=====================================================  ============================================

``<call>`` is the eventName in snake case without Lambda's API-version suffix
(``UpdateFunctionCode20150331v2`` -> ``update_function_code``); ``action`` is always the
eventName verbatim. **Reads** -- ``readOnly: true``, or a call named ``Get*``/``List*``/
``Describe*``/``Head*``/``Lookup*``/``Search*``/``BatchGet*`` when ``readOnly`` is absent -- keep
their type with ``.read`` appended and are never dropped: ``aws.ec2.describe_instances.read``,
``iam.user.read`` (``GetUser``), ``iam.sts.get_caller_identity.read``,
``aws.secretsmanager.get_secret_value.read``. Reads of ``organizations`` and ``cloudtrail`` are
``aws.<service>.<call>.read`` (``access.``/``config.`` types are for changes only). Credential
issuance (``AssumeRole``, which CloudTrail marks ``readOnly``) and ``ConsoleLogin`` are never
reads.

Outcome: ``failure`` when the record has an ``errorCode``; for ``ConsoleLogin`` the
``responseElements.ConsoleLogin`` value decides (``Success``/``Failure``); else ``success``.

Actor (per ``userIdentity.type``)
---------------------------------
=======================  ====================================================  =====================
type                     ``id`` (``principal`` is the ARN when there is one)   ``kind``
=======================  ====================================================  =====================
``Root``                 the ARN (``arn:aws:iam::<acct>:root``)                human
``IAMUser``              the user ARN                                          human with MFA or a
                                                                               console session,
                                                                               else unknown
``AssumedRole``          ``aws:source-identity:<sourceIdentity>`` when the      human with a
                         session carries one, else the assumed-role ARN        sourceIdentity,
                                                                               service for EC2
                                                                               instance roles,
                                                                               else unknown
``FederatedUser``        the federated-user ARN                                unknown
``IdentityCenterUser``   ``aws-identitycenter:<identityStoreArn>/<userId>``    human
``SAMLUser``,            ``aws-saml:<userName>`` / ``aws-webidentity:<...>``   human
``WebIdentityUser``
``AWSService``           ``aws-service:<invokedBy>``                           service
``AWSAccount``           ``aws-account:<accountId>`` (``aws:anonymous`` for     unknown
                         ``ANONYMOUS_PRINCIPAL``)
``Unknown`` / missing    ``aws:unknown:<userName or principalId>``             unknown
=======================  ====================================================  =====================

Assurance is what *this record* proves: ``mfa`` when ``sessionContext.attributes.
mfaAuthenticated`` is ``"true"`` (or a ``ConsoleLogin`` succeeded with ``MFAUsed: Yes``);
``claimed`` for a failed ``ConsoleLogin``; ``none`` (and ``verified: false``) for anonymous and
unknown identities; ``authenticated`` otherwise (AWS verified the request signature).

Sessions and role chains
------------------------
Links: ``session:aws:<accessKeyId>`` of the caller's *temporary* credentials (``ASIA...``:
role sessions, federation and session tokens, console sessions). Long-term user keys
(``AKIA...``) are not sessions -- a CI user's key would chain months of unrelated calls into one
component (DESIGN.md §3) -- so they are linked only with ``link_long_term_keys=True``. Calls that
issue credentials (``AssumeRole*``, ``GetFederationToken``, ``GetSessionToken``) also link the
*new* ``session:aws:<responseElements.credentials.accessKeyId>``, and say so in ``subject``
(the issued key) and in ``diff["session_issued"]``::

    {"session": "session:aws:ASIA2...", "assumed_role": "<assumed-role ARN>",
     "source_identity": "alice", "expiration": "...",
     "issued_to": {"actor": "<caller actor id>", "principal": "<caller ARN>",
                   "session": "session:aws:ASIA1..." | null, "assurance": "mfa"}}

So a role chain -- user -> AssumeRole (issues ASIA1) -> AssumeRole with ASIA1 (issues ASIA2) ->
API calls with ASIA2 -- is one connected chain: consecutive steps share a session key. The person
behind a later call is visible two ways: (1) when the role session carries a
``sourceIdentity`` (set on the first AssumeRole and propagated by AWS through the chain) the
actor id *is* ``aws:source-identity:<value>``; (2) in any case :func:`resolve_origin` walks the
``session_issued`` records of a set of events back from a call to the identity that first
obtained credentials (the IAM user, with its assurance). Assurance is never copied from one
record to another by :func:`to_events` (it is pure and sees one record); the walk shows the
assurance of every step, and ``issued_to.assurance`` keeps the caller's.

Also linked: ``request:<requestID>`` and ``request:<sharedEventID>`` (the copy of a
cross-account call in the other account).

Target
------
The resource: ``requestParameters`` ``roleArn``, ``userName``, ``roleName``, ``groupName``,
``policyArn``, ``bucketName``, ``instanceId``/``instancesSet``, ``functionName``, ``secretId``,
``trailName``/``name`` (CloudTrail), ``snapshotId``, ``imageId``, ``dBSnapshotIdentifier``,
``groupId``, ``keyId``, ``modelId``... (kind ``aws.<service>.<resource>``; ARNs as ids where
the record gives or implies one, so ``StopLogging``, ``DeleteTrail`` and ``PutEventSelectors`` on
one trail share its ARN), else the first ``resources[].ARN``, else the service itself
(kind ``aws.service``, id the eventSource). ``ConsoleLogin`` targets the account's console.

Id: ``event_id("cloudtrail", eventID)``. Time: ``eventTime`` (Logstash copies such as the OTRF
dataset only have ``@timestamp``). ``source``: ``cloudtrail://<recipientAccountId>/<awsRegion>``
(``cloudtrail://unknown`` without a recipient account, as in the honey-bucket CSV).
``raw``: the record through :func:`~pipeline.sources.redact.redact` (session tokens, secret
access keys and access key ids are hashed there; links keep access key ids in clear because
they are the correlation key and are not secret by AWS's definition).
"""

from __future__ import annotations

import ast
import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.errors import DecodeError
from pipeline.model import Event, event_id
from pipeline.sources._normalize import build, dig, fail, first_time, need, require_dict, slug
from pipeline.sources.redact import redact

__all__ = ["CSV_HEADER", "CsvRow", "csv_rows", "is_csv_export", "iter_records", "records_from_csv", "resolve_origin",
           "to_events"]

_ASSUME = frozenset({"AssumeRole", "AssumeRoleWithSAML", "AssumeRoleWithWebIdentity", "AssumeRoot"})
_ISSUING = _ASSUME | {"GetFederationToken", "GetSessionToken"}
_READ_PREFIXES = ("Get", "List", "Describe", "Head", "Lookup", "Search", "BatchGet")
_AUDIT_DISABLED = {
    ("cloudtrail", "StopLogging"), ("cloudtrail", "DeleteTrail"), ("cloudtrail", "DeleteEventDataStore"),
    ("cloudtrail", "StopEventDataStoreIngestion"), ("ec2", "DeleteFlowLogs"),
    ("route53resolver", "DeleteResolverQueryLogConfig"), ("config", "StopConfigurationRecorder"),
    ("config", "DeleteConfigurationRecorder"), ("config", "DeleteDeliveryChannel"),
    ("guardduty", "DeleteDetector"), ("securityhub", "DisableSecurityHub"),
}  # fmt: skip
_AUDIT_ENABLED = {
    ("cloudtrail", "StartLogging"), ("cloudtrail", "CreateTrail"), ("cloudtrail", "CreateEventDataStore"),
    ("ec2", "CreateFlowLogs"), ("config", "StartConfigurationRecorder"), ("guardduty", "CreateDetector"),
}  # fmt: skip
_IAM_VERBS = {
    "Create": "created", "Delete": "deleted", "Update": "updated", "Attach": "attached",
    "Detach": "detached", "Put": "put", "Add": "added", "Remove": "removed", "Tag": "tagged",
    "Untag": "untagged", "Enable": "enabled", "Deactivate": "deactivated", "Change": "changed",
    "Set": "set", "Upload": "uploaded", "Reset": "reset", "Resync": "resynced",
    "Generate": "generated", "Simulate": "simulated", "Upgrade": "upgraded",
}  # fmt: skip
_API_VERSION = re.compile(r"\d{8}(?:v\d+)?$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _snake(name: str) -> str:
    return slug(_CAMEL.sub("_", _API_VERSION.sub("", name)))


# --------------------------------------------------------------------------------------------
# input shapes


def iter_records(obj: Any) -> list[dict[str, Any]]:
    """The CloudTrail records in ``obj``: ``{"Records": [...]}``, a list, or a single record."""
    if isinstance(obj, dict) and "Records" in obj and "eventID" not in obj:
        items, where = obj["Records"], "$.Records"
        if items is None:
            return []
        if not isinstance(items, list):
            raise fail("wrong_type", "expected an array of CloudTrail records", where, type(items).__name__)
    elif isinstance(obj, list):
        items, where = obj, "$"
    elif isinstance(obj, dict):
        return [obj]
    else:
        raise fail("wrong_type", f"expected a CloudTrail record or log file, got {type(obj).__name__}", "$")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail("wrong_type", f"expected a record object, got {type(item).__name__}", f"{where}[{i}]")
    return list(items)


_CSV_COLUMNS = {
    "Event Type": "eventType",
    "Event Name": "eventName",
    "Request ID": "requestID",
    "Event ID": "eventID",
    "Event DateTime": "eventTime",
    "Source IP": "sourceIPAddress",
    "Request User Agent": "userAgent",
}


def _python_literal(text: str) -> Any:
    try:
        return ast.literal_eval(text) if text and text.strip() else None
    # Outside text: unhashable keys (TypeError), nesting too deep for the parser (MemoryError,
    # RecursionError) are as unreadable as a syntax error.
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


#: How an OTRF CloudTrail CSV export starts (its header row).
CSV_HEADER = "Event Type,Event Name,"


@dataclass(frozen=True)
class CsvRow:
    """One row of a CloudTrail CSV export: its first and last line in the file (a quoted field
    may span lines) and the record-shaped dict made of it."""

    line: int
    line_end: int
    record: dict[str, Any]


def is_csv_export(first_line: str | bytes) -> bool:
    """Whether a file whose first line is ``first_line`` is a CloudTrail CSV export (OTRF layout)."""
    text = first_line.decode("utf-8", "replace") if isinstance(first_line, bytes) else first_line
    return text.lstrip("\ufeff").startswith(CSV_HEADER)


def csv_rows(text: str | Iterable[str], *, event_source: str | None = None) -> Iterator[CsvRow]:
    """The rows of a CloudTrail CSV export, in file order, with their line numbers (see
    :func:`records_from_csv` for the mapping). CSV that cannot be read raises a ``DecodeError``
    naming the line, after the rows before it were yielded; the rest of the text is not read."""
    reader = csv.DictReader(io.StringIO(text) if isinstance(text, str) else text)
    end = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DecodeError("invalid_value", f"not readable as CSV at line {reader.line_num}: {exc}",
                              field="$") from None
        start, end = end + 1, reader.line_num
        yield CsvRow(start, end, _csv_record(row, event_source))


def records_from_csv(text: str | Iterable[str], *, event_source: str | None = None) -> list[dict[str, Any]]:
    """Record-shaped dicts from the OTRF ``AWS_S3_HoneyBucketLogs.csv`` layout.

    Columns ``Event Type, Event Name, Request ID, User ID, Request Parameters, Alert, Event ID,
    Event DateTime, ...``; ``User ID`` and ``Request Parameters`` hold Python-dict text (parsed
    with :func:`ast.literal_eval`, never evaluated). The CSV has no eventSource: ``event_source``,
    else ``s3.amazonaws.com`` when the request names a bucket. The remaining columns (the
    honeypot's ``Alert``, ``Alarm DateTime``, ``Repeated Attempts``) are kept under
    ``additionalEventData``; ``readOnly`` follows the call name.
    """
    return [row.record for row in csv_rows(text, event_source=event_source)]


def _csv_record(row: dict[str, Any], event_source: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {new: row.get(old) or None for old, new in _CSV_COLUMNS.items()}
    identity = _python_literal(row.get("User ID") or "")
    rec["userIdentity"] = identity if isinstance(identity, dict) else {"type": "Unknown"}
    params = _python_literal(row.get("Request Parameters") or "")
    rec["requestParameters"] = params if isinstance(params, dict) else None
    source = event_source
    if source is None and isinstance(params, dict) and "bucketName" in params:
        source = "s3.amazonaws.com"
    rec["eventSource"] = source
    name = rec.get("eventName") or ""
    rec["readOnly"] = name.startswith((*_READ_PREFIXES, "ListObjects"))
    extra = {k: v for k, v in row.items() if k not in _CSV_COLUMNS and k not in ("User ID", "Request Parameters")}
    rec["additionalEventData"] = {k: (v.strip() if isinstance(v, str) else v) for k, v in extra.items()}
    return {k: v for k, v in rec.items() if v is not None}


# --------------------------------------------------------------------------------------------
# type, target, actor


def _service(record: dict[str, Any]) -> str:
    source = need(record, "eventSource")
    return slug(
        source.split(".amazonaws.com", 1)[0].split(".", 1)[0] if source.endswith(".amazonaws.com") else source
    )


def _is_read(record: dict[str, Any], name: str) -> bool:
    if name in _ISSUING or name == "ConsoleLogin":
        return False
    flag = record.get("readOnly")
    if isinstance(flag, bool):
        return flag
    if isinstance(flag, str):
        return flag.lower() == "true"
    return name.startswith(_READ_PREFIXES)


def _iam_type(name: str, read: bool) -> str:
    for verb, past in _IAM_VERBS.items():
        if name.startswith(verb) and len(name) > len(verb) and name[len(verb)].isupper():
            return f"iam.{_snake(name[len(verb) :])}.{past}"
    for verb in _READ_PREFIXES:
        if name.startswith(verb) and len(name) > len(verb) and name[len(verb)].isupper():
            return f"iam.{_snake(name[len(verb) :])}"
    return f"iam.{_snake(name)}"


def _type(service: str, name: str, read: bool) -> str:
    if service == "signin" and name == "ConsoleLogin":
        return "iam.login"
    if service == "sts" and name in _ASSUME:
        return "iam.role.assumed"
    if service == "sts" and name == "GetFederationToken":
        return "iam.federation_token.issued"
    if service == "sts" and name == "GetSessionToken":
        return "iam.session_token.issued"
    if service in ("sts", "signin"):
        base = f"iam.{service}.{_snake(name)}"
    elif service == "iam":
        base = _iam_type(name, read)
    elif read:
        base = f"aws.{service}.{_snake(name)}"
    elif (service, name) in _AUDIT_DISABLED:
        return "config.audit.disabled"
    elif (service, name) in _AUDIT_ENABLED:
        return "config.audit.enabled"
    elif service == "cloudtrail":
        return "config.audit.changed"
    elif service == "organizations":
        return f"access.org.{_snake(name)}"
    else:
        base = f"aws.{service}.{_snake(name)}"
    return f"{base}.read" if read else base


# requestParameters key -> (resource kind, ARN template or None); {v} value, {a} account, {r} region
_TARGET_KEYS: tuple[tuple[str, str, str | None], ...] = (
    ("roleArn", "iam.role", "{v}"),
    ("userName", "iam.user", "arn:aws:iam::{a}:user/{v}"),
    ("roleName", "iam.role", "arn:aws:iam::{a}:role/{v}"),
    ("groupName", "iam.group", "arn:aws:iam::{a}:group/{v}"),
    ("policyArn", "iam.policy", "{v}"),
    ("bucketName", "s3.bucket", "arn:aws:s3:::{v}"),
    ("instanceId", "ec2.instance", "arn:aws:ec2:{r}:{a}:instance/{v}"),
    ("functionName", "lambda.function", None),
    ("secretId", "secretsmanager.secret", None),
    ("trailName", "cloudtrail.trail", None),
    ("snapshotId", "ec2.snapshot", "arn:aws:ec2:{r}::snapshot/{v}"),
    ("imageId", "ec2.image", "arn:aws:ec2:{r}::image/{v}"),
    ("dBSnapshotIdentifier", "rds.snapshot", None),
    ("groupId", "ec2.security_group", "arn:aws:ec2:{r}:{a}:security-group/{v}"),
    ("keyId", "kms.key", None),
    ("modelId", "bedrock.model", None),
    ("trustAnchorArn", "rolesanywhere.trust_anchor", "{v}"),
    ("parameterName", "ssm.parameter", None),
    ("resolverQueryLogConfigId", "route53resolver.query_log_config", None),
    ("target", "ssm.target", None),  # StartSession: an instance id (see _target)
    ("instanceIds", "ec2.instance", None),
)


def _first_instance(params: dict[str, Any]) -> str | None:
    items = dig(params, "instancesSet", "items")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("instanceId"), str):
                return item["instanceId"]
    ids = params.get("instanceIds")
    if isinstance(ids, list) and ids and isinstance(ids[0], str):
        return ids[0]
    return None


def _arn_parts(arn: str) -> tuple[str, str, str]:
    """``(service, resource kind, name)`` of an ARN (``arn:aws:iam::1:role/x`` -> iam, role, x)."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return "", "", arn
    service, resource = parts[2], parts[5]
    for sep in ("/", ":"):
        if sep in resource:
            kind, name = resource.split(sep, 1)
            return service, kind, name.rsplit("/", 1)[-1]
    return service, "", resource


def _target(record: dict[str, Any], service: str, name: str) -> dict[str, Any]:
    account = str(record.get("recipientAccountId") or dig(record, "userIdentity", "accountId") or "")
    region = str(record.get("awsRegion") or "")
    source = record.get("eventSource") or service
    if name == "ConsoleLogin":
        return {
            "kind": "aws.console",
            "id": f"aws:{account}:console",
            "name": "AWS Management Console",
            "service": source,
        }
    params = record.get("requestParameters")
    params = params if isinstance(params, dict) else {}
    if name == "GetFederationToken":
        arn = dig(record, "responseElements", "federatedUser", "arn")
        fname = params.get("name")
        if isinstance(arn, str) or isinstance(fname, str):
            ident = arn if isinstance(arn, str) else f"arn:aws:sts::{account}:federated-user/{fname}"
            return {
                "kind": "aws.sts.federated_user",
                "id": ident,
                "name": str(fname or ident),
                "service": source,
            }
    if service == "cloudtrail":
        arn = dig(record, "responseElements", "trailARN")
        for key in ("trailName", "name"):
            value = params.get(key)
            if isinstance(value, str) and value:
                short = value.rsplit("/", 1)[-1]
                if value.startswith("arn:"):
                    ident = value
                elif isinstance(arn, str) and arn.endswith(f"/{value}"):
                    ident = arn
                else:
                    ident = f"arn:aws:cloudtrail:{region}:{account}:trail/{value}"
                return {"kind": "aws.cloudtrail.trail", "id": ident, "name": short, "service": source}
    for key, kind, template in _TARGET_KEYS:
        value = params.get(key)
        if key == "instanceId" and not isinstance(value, str):
            value = _first_instance(params)
        if isinstance(value, list):
            value = value[0] if value and isinstance(value[0], str) else None
        if key == "target" and isinstance(value, str) and re.fullmatch(r"i-[0-9a-fA-F]{8,17}", value):
            kind, template = "ec2.instance", "arn:aws:ec2:{r}:{a}:instance/{v}"
        if isinstance(value, str) and value:
            if value.startswith("arn:"):
                ident = value
            elif template is not None and (account or "{a}" not in template):
                ident = template.format(v=value, a=account, r=region)
            else:
                ident = f"{service}:{account}:{region}:{value}"
            short = _arn_parts(value)[2] if value.startswith("arn:") else value
            return {"kind": f"aws.{kind}", "id": ident, "name": short, "service": source}
    resources = record.get("resources")
    if isinstance(resources, list):
        for res in resources:
            if isinstance(res, dict):
                arn = res.get("ARN") or res.get("ARNPrefix")
                if isinstance(arn, str) and arn:
                    svc, kind, short = _arn_parts(arn)
                    rtype = res.get("type")
                    if isinstance(rtype, str) and rtype.count("::") == 2:
                        svc, kind = rtype.split("::")[1].lower(), _snake(rtype.split("::")[2])
                    return {
                        "kind": f"aws.{slug(svc)}.{slug(kind or 'resource')}",
                        "id": arn,
                        "name": short,
                        "service": source,
                    }
    return {"kind": "aws.service", "id": str(source), "name": service, "service": source}


def _mfa(record: dict[str, Any]) -> bool:
    flag = dig(record, "userIdentity", "sessionContext", "attributes", "mfaAuthenticated")
    if flag is True or (isinstance(flag, str) and flag.lower() == "true"):
        return True
    used = dig(record, "additionalEventData", "MFAUsed")
    return record.get("eventName") == "ConsoleLogin" and isinstance(used, str) and used.lower() == "yes"


def _source_identity(identity: dict[str, Any]) -> str | None:
    value = dig(identity, "sessionContext", "sourceIdentity") or identity.get("sourceIdentity")
    return value if isinstance(value, str) and value else None


def _actor(record: dict[str, Any], outcome: str) -> dict[str, Any]:
    identity = record.get("userIdentity")
    identity = identity if isinstance(identity, dict) else {}
    kind_name = identity.get("type") or "Unknown"
    arn = identity.get("arn") if isinstance(identity.get("arn"), str) else ""
    account = str(identity.get("accountId") or record.get("recipientAccountId") or "")
    user_name = identity.get("userName") if isinstance(identity.get("userName"), str) else None
    mfa = _mfa(record)
    console = record.get("eventName") == "ConsoleLogin"
    verified = True
    display = user_name or arn
    kind = "unknown"
    if kind_name == "Root":
        ident, display, kind = arn or f"arn:aws:iam::{account}:root", "root", "human"
    elif kind_name == "IAMUser":
        ident = arn or f"arn:aws:iam::{account}:user/{user_name or identity.get('principalId')}"
        session = isinstance(dig(identity, "sessionContext", "attributes", "creationDate"), str)
        agent = str(record.get("userAgent") or "")
        kind = "human" if mfa or console or (session and "console" in agent) else "unknown"
    elif kind_name == "AssumedRole":
        source_identity = _source_identity(identity)
        session_name = (
            arn.rsplit("/", 1)[-1] if arn else str(identity.get("principalId") or "").split(":")[-1]
        )
        issuer = dig(identity, "sessionContext", "sessionIssuer", "userName")
        if source_identity:
            ident, display, kind = f"aws:source-identity:{source_identity}", source_identity, "human"
        else:
            ident = arn or f"aws:{account}:assumed-role:{identity.get('principalId')}"
            display = f"{issuer}/{session_name}" if isinstance(issuer, str) else session_name
            if dig(identity, "sessionContext", "ec2RoleDelivery") or re.fullmatch(
                r"i-[0-9a-fA-F]{8,17}", session_name
            ):
                kind = "service"
            elif "@" in session_name:
                kind = "human"
    elif kind_name == "FederatedUser":
        ident = arn or f"arn:aws:sts::{account}:federated-user/{identity.get('principalId')}"
        display = arn.rsplit("/", 1)[-1] if arn else str(identity.get("principalId"))
    elif kind_name == "IdentityCenterUser":
        on_behalf_of = identity.get("onBehalfOf")
        on_behalf: dict[str, Any] = on_behalf_of if isinstance(on_behalf_of, dict) else {}
        user_id = on_behalf.get("userId") or identity.get("principalId") or "unknown"
        store = on_behalf.get("identityStoreArn") or account
        ident, display, kind = f"aws-identitycenter:{store}/{user_id}", str(user_name or user_id), "human"
    elif kind_name in ("SAMLUser", "WebIdentityUser"):
        who = user_name or identity.get("principalId") or "unknown"
        prefix = "aws-saml" if kind_name == "SAMLUser" else "aws-webidentity"
        ident, display, kind = f"{prefix}:{who}", str(who), "human"
    elif kind_name == "AWSService":
        invoked = identity.get("invokedBy") or record.get("sourceIPAddress") or "unknown"
        ident, display, kind = f"aws-service:{invoked}", str(invoked), "service"
    elif kind_name == "AWSAccount":
        acct = identity.get("accountId") or identity.get("principalId") or "unknown"
        if acct == "ANONYMOUS_PRINCIPAL":
            ident, display, verified = "aws:anonymous", "anonymous", False
        else:
            ident, display = f"aws-account:{acct}", f"account {acct}"
    else:
        who = user_name or identity.get("principalId") or "unknown"
        ident, display, verified = f"aws:unknown:{who}", str(who), False
    if not verified:
        assurance = "none"
    elif console and outcome != "success":
        assurance, verified = "claimed", False
    elif mfa:
        assurance = "mfa"
    else:
        assurance = "authenticated"
    principal = arn or (f"aws-service:{identity.get('invokedBy')}" if kind_name == "AWSService" else ident)
    return {
        "id": ident,
        "display": display or ident,
        "kind": kind,
        "principal": principal,
        "verified": verified,
        "assurance": assurance,
    }


def _outcome(record: dict[str, Any], name: str) -> str:
    if record.get("errorCode"):
        return "failure"
    if name == "ConsoleLogin":
        result = dig(record, "responseElements", "ConsoleLogin")
        if isinstance(result, str):
            return "success" if result.lower() == "success" else "failure"
        return "unknown"
    return "success"


def _session_key(key: Any, long_term: bool) -> str | None:
    if not isinstance(key, str) or not key or any(c.isspace() for c in key):
        return None
    if key.startswith("ASIA") or long_term:
        return f"session:aws:{key}"
    return None


# --------------------------------------------------------------------------------------------


def to_events(record: Any, *, scope: str, link_long_term_keys: bool = False) -> list[Event]:
    """The change event of one CloudTrail record (always exactly one; see the module docstring)."""
    record = require_dict(record, "$", "a CloudTrail record object")
    event_ident = need(record, "eventID")
    name = need(record, "eventName")
    if "userIdentity" in record and record["userIdentity"] is not None:
        require_dict(record["userIdentity"], "$.userIdentity")
    service = _service(record)
    read = _is_read(record, name)
    found = first_time([("$.eventTime", record.get("eventTime")), ("$.@timestamp", record.get("@timestamp"))])
    if found is None:
        raise fail(
            "missing_field", "no usable eventTime (or @timestamp)", "$.eventTime", record.get("eventTime")
        )
    outcome = _outcome(record, name)
    actor = _actor(record, outcome)

    caller = _session_key(dig(record, "userIdentity", "accessKeyId"), link_long_term_keys)
    links: list[str | None] = [caller]
    subject: str | None = None
    diff: dict[str, Any] | None = None
    if name in _ISSUING and outcome == "success":
        issued = _session_key(dig(record, "responseElements", "credentials", "accessKeyId"), True)
        if issued:
            links.append(issued)
            subject = issued
            source_identity = dig(record, "responseElements", "sourceIdentity") or dig(
                record, "requestParameters", "sourceIdentity"
            )
            if not isinstance(source_identity, str):
                source_identity = _source_identity(record.get("userIdentity") or {})
            diff = {
                "session_issued": {
                    "session": issued,
                    "assumed_role": dig(record, "responseElements", "assumedRoleUser", "arn")
                    or dig(record, "responseElements", "federatedUser", "arn"),
                    "source_identity": source_identity,
                    "expiration": dig(record, "responseElements", "credentials", "expiration"),
                    "issued_to": {
                        "actor": actor["id"],
                        "principal": actor["principal"],
                        "session": caller,
                        "assurance": actor["assurance"],
                    },
                }
            }
    for key in ("requestID", "sharedEventID"):
        value = record.get(key)
        if isinstance(value, str) and value:
            links.append(f"request:{value}")

    account = record.get("recipientAccountId")  # the account whose log this is (not the caller's)
    if not (isinstance(account, str) and re.fullmatch(r"\d{12}", account)):
        account = "unknown"
    region = record.get("awsRegion")
    envelope: dict[str, Any] = {
        "id": event_id("cloudtrail", event_ident),
        "source": f"cloudtrail://{account}/{region}" if region else f"cloudtrail://{account}",
        "type": _type(service, name, read),
        "time": found[1],
        "scope": scope,
        "actor": actor,
        "target": _target(record, service, name),
        "action": name,
        "outcome": outcome,
        "links": links,
        "raw": redact(record),
    }
    if subject:
        envelope["subject"] = subject
    if diff:
        envelope["diff"] = diff
    return [build(envelope)]


def resolve_origin(events: Iterable[Event], event: Event) -> list[dict[str, Any]]:
    """The steps from ``event`` back to whoever first obtained its credentials.

    ``events`` are CloudTrail envelopes (any order). Starting from ``event``'s caller session
    (its ``session:aws:`` link that it did not issue itself), each step finds the event whose
    ``diff.session_issued.session`` is that key and moves to *its* caller; the walk stops at an
    event whose caller has no temporary session (an IAM user's long-term key, a console login,
    an AWS service) or whose issuing event is not among ``events``. Returns one dict per event
    on the way, ``event`` first and the origin last: ``{"event": id, "actor": actor id,
    "principal", "assurance", "session": caller key or None}``.
    """
    issuers: dict[str, Event] = {}
    for ev in events:
        issued = (ev.diff or {}).get("session_issued") if isinstance(ev.diff, dict) else None
        if isinstance(issued, dict) and isinstance(issued.get("session"), str):
            issuers.setdefault(issued["session"], ev)
    steps: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: Event | None = event
    while current is not None and current.id not in seen:
        seen.add(current.id)
        own = (
            ((current.diff or {}).get("session_issued") or {}).get("session")
            if isinstance(current.diff, dict)
            else None
        )
        caller = next((k for k in current.links if k.startswith("session:aws:") and k != own), None)
        steps.append(
            {
                "event": current.id,
                "actor": current.actor.id,
                "principal": current.actor.principal,
                "assurance": current.actor.assurance,
                "session": caller,
            }
        )
        current = issuers.get(caller) if caller else None
    return steps
