"""Secret redaction shared by every source (pure, deterministic).

A secret is never written anywhere causelog stores it; it is replaced by
``redacted:hmac-sha256:v1:<32 hex>``, the first 128 bits of HMAC-SHA256 of the value under the
deployment's key (:mod:`pipeline.sources.keyed`), so that a *change* of the secret is still
visible (the marker changes) while the value is not, and a weak secret (``hunter2``) cannot be
confirmed by hashing guesses without the key. Strings are hashed as their UTF-8 bytes; other
values as their canonical JSON (sorted keys, no whitespace). Equal secrets give equal markers
within one deployment (one key).

Two kinds of evidence make a value secret:

1. **Its key** (:func:`is_secret_key`). The key is split into words (snake_case, camelCase,
   kebab-case, dotted) and the *last* word decides, after dropping "transparent" suffixes such as
   ``value``, ``data``, ``hash``, ``b64``: ``db_password``, ``clientSecret``, ``X-Api-Key``,
   ``session_token``, ``password_hash``, ``sentry_dsn`` are secret; ``password_policy``,
   ``secret_name``, ``token_type``, ``keyboard``, ``monkey`` are not. ``key`` counts only after a
   secret-like qualifier (``api_key``, ``private_key``, ``access_key``, ``client_key``,
   ``encryption_key``, ``license_key``...), never alone (map entries, tag keys) nor after other
   words (``hash_key``, ``instance_key``, ``primary_key``, ``public_key``, ``ssh_key``,
   ``kms_key``). ``access key`` / ``secret key`` / ``private key`` / ``api key`` anywhere in the
   name count too unless a metadata word ends it (``aws_access_key_id`` is secret,
   ``private_key_path`` is not). Pagination/idempotency tokens (``next_token``, ``clientToken``)
   are not secrets. ``private`` counts only as the whole key.

   Under a secret key, strings and numbers are replaced; ``None``, booleans, empty strings,
   already-masked placeholders (``********``) and existing markers are kept (they reveal
   nothing, and ``"private": false`` on a GitHub repository must stay readable). A dict or list
   under a secret key is walked in *secret context*: every scalar in it is replaced except those
   under reference-like keys (``name``, ``kind``, ``type``, ``id``, ``mode``, ``path``,
   ``optional``, ``user``, ``expiration``...), so ``{"secret": {"secretName": "db",
   "defaultMode": 420}}`` in a pod spec keeps its reference and
   ``{"credentials": {"user": "u", "pass": "p"}}`` keeps ``u`` but loses ``p``.
   ``{"name": "DB_PASSWORD", "value": "..."}`` pairs (container env, tags) hide ``value``.
   Children of ``permissions`` are permission names, not secrets (GitHub App ``"secrets": "write"``).

2. **Its shape** (:func:`looks_like_credential`), anywhere in any string; matches are replaced
   *inside* the string so the rest stays readable:
   AWS access key ids (``AKIA``/``ASIA``...), GitHub tokens (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``,
   ``ghr_``, ``github_pat_``), Slack tokens (``xox?-``, ``xapp-``), GitLab/npm/Stripe/Google API
   keys, JWTs, ``Bearer``/``Basic`` credentials, PEM *private key* blocks, the password of a URL
   (``scheme://user:password@host``) and the value of ``name=value`` / ``name: value`` /
   ``"name": "value"`` assignments whose name is a secret key (``password = x`` in a properties
   file, ``Password=x;`` in a connection string, ``?token=x`` in a URL). A whole string that is one
   token is also replaced when it is an AWS-secret-like 40-character base64 string or
   high-entropy (>= 24 characters, Shannon entropy > 4.0 bits/char, upper- and lower-case letters
   and digits, a run of >= 16 letters/digits, and not mostly made of words such as
   ``UpdateFunctionConfiguration20150331v2`` or CloudFormation-generated names).

Not redacted on purpose: git SHAs and other hex digests, UUIDs, URLs without a password, ISO
timestamps, file paths, e-mail addresses, ARNs, and PEM blocks that are public by nature
(certificates, public keys, PGP *signatures* -- GitHub puts commit signatures in payloads).
Values under identifier-like keys (``id``, ``node_id``, ``sha``, ``uid``, ``etag``, ``url``,
``digest``, ``path``, ``ref``, ``name``, ``next_token``...) skip only the generic high-entropy
heuristic (GitHub node ids and AWS pagination tokens look random); the specific credential
shapes above still apply to them.

``redact(redact(x)) == redact(x)``: markers are never re-hashed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any

import orjson

from pipeline.sources import keyed

__all__ = [
    "MARKER_PREFIX",
    "is_marker",
    "is_secret_key",
    "looks_like_credential",
    "redact",
    "redact_text",
    "redact_value",
]

MARKER_PREFIX = "redacted:" + keyed.PREFIX
_MARKER_RE = re.compile(re.escape(MARKER_PREFIX) + f"[0-9a-f]{{{keyed.HEX_DIGITS}}}")

# --------------------------------------------------------------------------------------------
# keys

_NOUNS = frozenset(
    {
        "password", "passwords", "passwd", "pwd", "passphrase", "secret", "secrets", "token",
        "credential", "credentials", "creds", "cookie", "cookies", "dsn", "auth", "authorization",
        "apikey", "privatekey", "secretkey", "accesskey", "sensitive", "pat",
    }
)  # fmt: skip
# Compound single words (``authtoken``, ``dbpassword``) end with one of these.
_COMPOUND_ENDINGS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "secretkey",
    "accesskey",
)
# Suffixes that still denote the secret itself (``password_hash``, ``secret_value``, ``token_b64``).
_TRANSPARENT = frozenset(
    {
        "value", "val", "data", "b64", "base64", "hash", "hashed", "plain", "plaintext", "pem", "der",
        "enc", "encrypted", "raw", "str", "string", "text", "bytes", "literal", "content", "contents",
    }
)  # fmt: skip
# ``<qualifier>_key`` that are secrets (``api_key``, ``x-api-key``, ``clientKey``); any other
# ``..._key`` is not (``hash_key``, ``instance_key``, ``primary_key``, ``ssh_key``, ``kms_key``).
_SECRET_KEY_QUALIFIERS = frozenset(
    {
        "api", "private", "secret", "access", "signing", "encryption", "decryption", "client",
        "master", "license", "licence", "app", "application", "account", "storage", "shared",
        "session", "auth", "admin", "root", "service", "sas", "consumer", "webhook", "crypto",
        "hmac", "jwt", "token", "aes", "rsa", "user", "subscription", "integration", "write",
        "read", "ingest", "ingestion", "instrumentation", "server", "partner", "merchant", "mac",
        "cipher", "wrapping", "unseal", "recovery", "backup", "sentry", "stripe", "datadog", "dd",
    }
)  # fmt: skip
# ``<qualifier>_token`` that are not secrets (pagination cursors, idempotency tokens).
_NONSECRET_TOKEN_QUALIFIERS = frozenset(
    {
        "next",
        "page",
        "continuation",
        "pagination",
        "resume",
        "sync",
        "client",
        "idempotency",
        "cancellation",
        "marker",
        "start",
    }
)
# Adjacent word pairs that make a name secret wherever they occur (``aws_access_key_id``).
_SECRET_PAIRS = frozenset(
    {
        ("access", "key"),
        ("secret", "key"),
        ("private", "key"),
        ("api", "key"),
        ("signing", "key"),
        ("encryption", "key"),
        ("master", "key"),
    }
)
# ...unless the name ends in a metadata word (``private_key_path``, ``api_key_name``).
_METADATA_SUFFIXES = frozenset(
    {"path", "file", "filename", "name", "type", "arn", "ref", "length", "size", "algorithm", "format", "version", "ttl", "expiry", "expires", "rotation", "policy", "count", "enabled", "required"}
)  # fmt: skip
# In secret context, values under these keys are references/metadata and stay readable.
_REF_WORDS = frozenset(
    {
        "name", "names", "kind", "type", "id", "ids", "arn", "mode", "namespace", "ref", "optional",
        "path", "version", "provider", "region", "description", "enabled", "format", "at",
        "created", "updated", "expires", "expiry", "ttl", "algorithm", "scheme", "status", "state",
        "url", "uri", "host", "port", "username", "user", "login", "key", "items", "scope", "scopes",
        "date", "time", "timestamp", "expiration", "issued", "account", "role",
    }
)  # fmt: skip
# Keys whose values are identifiers: skip only the generic entropy heuristic for them.
_ID_WORDS = frozenset(
    {
        "id", "ids", "uid", "sha", "shas", "sha1", "sha256", "sha512", "md5", "etag", "digest",
        "checksum", "fingerprint", "url", "uri", "href", "link", "path", "ref", "version",
        "signature", "cursor", "revision", "generation", "hash", "token", "name", "names", "arn",
        "title", "label", "slug", "login", "username", "image", "tag", "key", "marker",
    }
)  # fmt: skip
# Children of these keys are permission/scope names, never secrets themselves.
_PERMISSION_PARENTS = frozenset({"permissions", "permission", "scopes", "oauth_scopes"})
_SECRET_WHOLE_NAMES = frozenset({"private"})

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _CAMEL.findall(name)]


def is_secret_key(name: str) -> bool:
    """Whether a mapping key names a secret (see the module docstring for the rules)."""
    if not isinstance(name, str):
        return False
    return _is_secret_key(name)


@lru_cache(maxsize=8192)
def _is_secret_key(name: str) -> bool:
    words = _words(name)
    if not words:
        return False
    if len(words) == 1 and words[0] in _SECRET_WHOLE_NAMES:
        return True
    for i in range(len(words) - 1):
        if (words[i], words[i + 1]) in _SECRET_PAIRS and words[-1] not in _METADATA_SUFFIXES:
            return True
    if words[-2:] == ["connection", "string"] or words[-1] in ("connectionstring", "connstr"):
        return True
    while len(words) > 1 and words[-1] in _TRANSPARENT:
        words.pop()
    last = words[-1]
    qualifier = words[-2] if len(words) > 1 else ""
    if last == "key":
        return qualifier in _SECRET_KEY_QUALIFIERS
    if last == "token" and qualifier in _NONSECRET_TOKEN_QUALIFIERS:
        return False
    if last in _NOUNS:
        return True
    return last.endswith(_COMPOUND_ENDINGS) and last not in _COMPOUND_FALSE_FRIENDS


# Single words that end like a secret noun but are not one.
_COMPOUND_FALSE_FRIENDS = frozenset({"nonsecret", "tokenizer"})


@lru_cache(maxsize=8192)
def _last_word(name: str | None) -> str:
    """The last alphabetic word of a key (``codeSha256`` -> ``sha``, ``x-amz-id-2`` -> ``id``)."""
    if not name:
        return ""
    for word in reversed(_words(name)):
        if not word.isdigit():
            return word
    return ""


# --------------------------------------------------------------------------------------------
# values


def _canonical_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return value
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return repr(value).encode()


def is_marker(value: Any) -> bool:
    """Whether ``value`` is already a redaction marker."""
    return isinstance(value, str) and _MARKER_RE.fullmatch(value) is not None


def redact_value(value: Any) -> Any:
    """The marker ``redacted:hmac-sha256:v1:<32 hex>`` for ``value`` under the installed key
    (:func:`pipeline.sources.keyed.current`); markers are returned unchanged."""
    if is_marker(value):
        return value
    return "redacted:" + keyed.current().tag(_canonical_bytes(value))


_MASKED = re.compile(
    r"[*xX•#.\-]{3,}|<\s*redacted\s*>|\[\s*redacted\s*\]|\(\s*sensitive(?: value)?\s*\)|redacted", re.I
)


def _keep_under_secret_key(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return value == "" or is_marker(value) or _MASKED.fullmatch(value) is not None
    return False


# Specific credential shapes, replaced wherever they occur inside a string.
_PATTERNS: tuple[re.Pattern[str], ...] = (
    # PEM private key blocks (RSA, EC, OPENSSH, ENCRYPTED, PGP PRIVATE KEY BLOCK); unterminated too.
    re.compile(
        r"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END (?P=label)-----|\Z)",
        re.S,
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),  # AWS access key ids
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,255}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),
    re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"\bxapp-\d-[A-Za-z0-9-]{10,}"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),  # GitLab
    re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"),
    re.compile(r"\b(?:sk|rk|pk)_live_[A-Za-z0-9]{16,}\b"),  # Stripe secret/restricted keys
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API key
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}\b"),  # OpenAI/Anthropic style keys
)
# All of the above in one pass, run only when a string holds one of their fixed parts.
_ANY_PATTERN = re.compile("|".join(f"(?:{p.pattern})" for p in _PATTERNS), re.S)
_PATTERN_HINTS = ("-----BEGIN", "eyJ", "AKIA", "ASIA", "ABIA", "ACCA", "gh", "github_pat_", "xox", "xapp-",
                  "glpat-", "npm_", "_live_", "AIza", "sk-")  # fmt: skip
_AUTH_HINTS = ("bearer", "basic", "token", "digest", "negotiate")
# ``Authorization: Bearer <x>`` and friends: keep the scheme, hide the credential.
_AUTH_SCHEME = re.compile(
    r"\b(?P<scheme>Bearer|Basic|Token|Digest|Negotiate)\s+(?P<cred>[A-Za-z0-9._~+/=-]{8,})", re.I
)
# ``scheme://user:password@host``: hide the password only.
_URL_PASSWORD = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<pw>[^/\s@]+)(?=@)")
# ``name = value``, ``name: value``, ``"name": "value"``, ``name=value&`` -- value hidden if name is secret.
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.\-:/])(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,80})(?P<nq>[\"']?)(?P<sep>[ \t]*[=:][ \t]*)(?P<q>[\"']?)"
    r"(?P<val>(?:(?:Bearer|Basic|Token)\s+)?[^\s\"'&;,]+)"
)
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+]{40}")

_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?", re.I)
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_EMAIL = re.compile(r"[^@\s]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PATH = re.compile(r"(?:~|\.{1,2})?(?:/[\w.@:+~-]{1,23})+/?|[A-Za-z]:\\[\w\\ .-]*")
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{16,}")


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _mixed(s: str) -> bool:
    return any(c.islower() for c in s) and any(c.isupper() for c in s) and any(c.isdigit() for c in s)


def _is_benign_token(s: str) -> bool:
    return bool(
        _HEX.fullmatch(s)
        or _UUID.fullmatch(s)
        or _ISO_TIME.fullmatch(s)
        or _URL.fullmatch(s)
        or _EMAIL.fullmatch(s)
        or _PATH.fullmatch(s)
        or s.startswith("arn:")
    )


_WORDISH = re.compile(r"[A-Z]?[a-z]{2,}|[A-Z]{3,}(?![a-z])")
_VOWELS = frozenset("aeiouyAEIOUY")


def _reads_as_words(s: str) -> bool:
    """Identifiers made of words (``UpdateFunctionConfiguration20150331v2``, CloudFormation names)."""
    covered = sum(len(w) for w in _WORDISH.findall(s) if len(w) >= 3 and any(c in _VOWELS for c in w))
    return covered >= 0.5 * len(s)


def _whole_token_secret(s: str) -> bool:
    """A single-token string that looks generated: AWS-secret-like or high entropy."""
    if len(s) < 24 or any(c.isspace() for c in s) or is_marker(s) or _is_benign_token(s):
        return False
    if not _mixed(s):
        return False
    if len(s) == 40 and _AWS_SECRET.fullmatch(s):
        return True
    return _ALNUM_RUN.search(s) is not None and _entropy(s) > 4.0 and not _reads_as_words(s)


def _sub_assignments(text: str) -> str:
    """Hide the value of every ``name=value`` whose name is a secret key.

    A match whose name is not secret consumes nothing but its name, so an assignment inside its
    value (``https://host/x?token=...``) is still found.
    """
    out: list[str] = []
    copied = search_at = 0
    while (m := _ASSIGNMENT.search(text, search_at)) is not None:
        val = m.group("val")
        if (
            not is_secret_key(m.group("name"))
            or is_marker(val.split()[-1])
            or val.startswith(("{", "["))
            or _keep_under_secret_key(val)
        ):
            search_at = m.end("name")
            continue
        scheme = _AUTH_SCHEME.fullmatch(val)
        hidden = (
            f"{scheme.group('scheme')} {redact_value(scheme.group('cred'))}" if scheme else redact_value(val)
        )
        out += [text[copied : m.start("val")], hidden]
        copied = search_at = m.end()
    return "".join(out) + text[copied:]


def redact_text(text: str, *, entropy: bool = True) -> str:
    """``text`` with every credential-shaped part replaced by its marker.

    ``entropy=False`` skips the generic whole-string high-entropy heuristic (used for values under
    identifier-like keys); the specific shapes still apply.
    """
    if not text or is_marker(text):
        return text
    if len(text) < 16 and "=" not in text and ":" not in text:
        return text  # too short for any credential shape but ``name=value``
    if entropy and _whole_token_secret(text):
        return redact_value(text)
    out = text
    if any(hint in out for hint in _PATTERN_HINTS):
        out = _ANY_PATTERN.sub(lambda m: redact_value(m.group(0)), out)
    if "://" in out and "@" in out:
        out = _URL_PASSWORD.sub(
            lambda m: (
                m.group(0)
                if is_marker(m.group("pw")) or m.group("pw").startswith(MARKER_PREFIX)
                else m.group("pre") + redact_value(m.group("pw"))
            ),
            out,
        )
    lowered = out.lower()
    if any(hint in lowered for hint in _AUTH_HINTS):
        out = _AUTH_SCHEME.sub(
            lambda m: (
                m.group(0)
                if m.group("cred").startswith("redacted")
                else f"{m.group('scheme')} {redact_value(m.group('cred'))}"
            ),
            out,
        )
    if "=" not in out and ":" not in out:
        return out
    return _sub_assignments(out)


def looks_like_credential(s: str) -> bool:
    """Whether a string is, or contains, something credential-shaped (see the module docstring)."""
    return isinstance(s, str) and redact_text(s) != s


# --------------------------------------------------------------------------------------------
# structures


def redact(obj: Any, *, key: str | None = None) -> Any:
    """A redacted deep copy of ``obj`` (dicts, lists, tuples, scalars); ``obj`` is not modified.

    ``key`` is the name ``obj`` sits under, when known: ``redact("hunter2", key="password")``
    hides the value.
    """
    if key is not None and is_secret_key(key):
        return _mask_secret(obj)
    return _walk(obj, key, in_secret=False, permission_children=False)


def _mask_secret(value: Any) -> Any:
    if _keep_under_secret_key(value):
        return value
    if isinstance(value, dict | list | tuple):
        return _walk(value, None, in_secret=True, permission_children=False)
    return redact_value(value)


def _pair_hides_value(d: dict[Any, Any]) -> bool:
    """``{"name": "DB_PASSWORD", "value": ...}`` (container env, tags): the value is secret."""
    if not any(isinstance(k, str) and k.lower() == "value" for k in d):
        return False
    for k, v in d.items():
        if isinstance(k, str) and k.lower() in ("name", "key") and isinstance(v, str) and is_secret_key(v):
            return True
    return False


def _walk(obj: Any, key: str | None, *, in_secret: bool, permission_children: bool) -> Any:
    if isinstance(obj, dict):
        hide_value = _pair_hides_value(obj)
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            ks = k if isinstance(k, str) else str(k)
            if hide_value and ks.lower() == "value" or not permission_children and is_secret_key(ks):
                out[k] = _mask_secret(v)
            else:
                out[k] = _walk(
                    v, ks, in_secret=in_secret, permission_children=ks.lower() in _PERMISSION_PARENTS
                )
        return out
    if isinstance(obj, list | tuple):
        return [_walk(v, key, in_secret=in_secret, permission_children=False) for v in obj]
    if in_secret and _last_word(key) not in _REF_WORDS:
        return obj if _keep_under_secret_key(obj) else redact_value(obj)
    if isinstance(obj, str):
        return redact_text(obj, entropy=_last_word(key) not in _ID_WORDS)
    return obj
