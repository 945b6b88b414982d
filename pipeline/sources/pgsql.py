"""PostgreSQL statement normalisation (pure; no I/O): literals out, shape and fingerprint kept.

causelog never stores the literal values of a statement. :func:`analyze` tokenises one SQL text
the way the PostgreSQL lexer does (standard-conforming strings by default) and returns a
:class:`Statement`:

``normalized``
    The statement with every literal replaced by ``?``:

    - string constants ``'...'`` (``''`` escapes), ``E'...'`` (backslash escapes), ``B'...'``,
      ``X'...'``, ``N'...'``, ``U&'...'`` and dollar-quoted ``$$...$$`` / ``$tag$...$tag$`` bodies
      (function bodies included: they can hold literals too);
    - numbers (``42``, ``-42`` when the minus is unary, ``1.5``, ``.5``, ``1e-3``, ``0x1F``,
      ``0o17``, ``0b101``, ``1_000``);
    - ``TRUE`` / ``FALSE``.

    ``$n`` parameters stay. ``NULL``, identifiers and ``"quoted identifiers"`` stay. Lists that
    hold nothing but placeholders collapse to their first item, so statements that differ only
    in list length normalise alike: ``IN (1, 2, 3)`` -> ``IN (?)``, ``IN ($1, $2)`` -> ``IN ($1)``,
    ``ARRAY[1, 2]`` -> ``ARRAY[?]``, and ``VALUES (?, ?), (?, ?)`` -> ``VALUES (?, ?)`` (identical
    rows only). Comments are removed, except that a sqlcommenter comment
    (``/*key='value',...*/``) is reduced to its key names: ``/*action,traceparent*/``. Runs of
    whitespace become one space; a trailing ``;`` is dropped.

    An unterminated string, dollar quote or comment (a truncated log line) swallows the rest of
    the text: it becomes a single ``?``, so a cut-off literal cannot leak.

``hash``
    ``hmac-sha256:v1:<32 hex>``: the keyed hash of the full UTF-8 text under the deployment's key
    (:mod:`pipeline.sources.keyed`), so two identical statements can be matched without storing
    them, and a statement's literals cannot be recovered by hashing guesses without the key.
    When the statement sets a password (``PASSWORD '...'`` in ``CREATE/ALTER ROLE/USER``), the
    password literal is replaced by ``<REDACTED>`` first and ``password_scrubbed`` is true, so
    the password is not in the hash at all (should the key ever leak).

``trace_id`` / ``span_id``
    From a W3C ``traceparent`` in a sqlcommenter comment (``/*traceparent='00-<32 hex>-<16 hex>-
    <2 hex>'*/``; keys and values may be URL-encoded, as sqlcommenter writes them). Only comments
    are searched, never string literals. An all-zero trace id or version ``ff`` is ignored.

``command`` / ``statement_class``
    The command tag PostgreSQL would report (``SELECT``, ``CREATE TABLE``, ``ALTER ROLE`` for
    ``ALTER USER``/``ALTER GROUP``, ``GRANT``...) and pgaudit's class for it (``READ``, ``WRITE``,
    ``FUNCTION``, ``ROLE``, ``DDL``, ``MISC``) -- see :func:`statement_class`.

``object_kind`` / ``object_name``
    The main object named by the statement when it is easy to find (``INSERT INTO t``,
    ``UPDATE t``, ``DELETE FROM t``, ``CREATE/ALTER/DROP TABLE t``, ``GRANT ... ON t``,
    ``CREATE/ALTER/DROP ROLE r``...); only identifiers are returned, never literals, resolved
    as PostgreSQL does (``"Name"`` -> ``Name``, ``Name`` -> ``name``; ``schema.table`` as written).

``grantees``
    For ``GRANT ... TO a, b`` / ``REVOKE ... FROM a``, the role names.

``analyze(sql, mysql=True)`` applies MySQL's lexical rules instead (for Debezium's MySQL
``source.query``): ``"..."`` is a string literal, backslashes escape inside strings, back-quoted
names are identifiers and ``#`` starts a comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from pipeline.sources import keyed

__all__ = [
    "Statement",
    "analyze",
    "command_tag",
    "normalize",
    "parse_traceparent",
    "scrub_message",
    "statement_class",
]


@dataclass(frozen=True)
class Statement:
    """What causelog keeps of one SQL statement (see the module docstring)."""

    normalized: str
    hash: str
    command: str
    statement_class: str
    trace_id: str | None = None
    span_id: str | None = None
    comment_keys: tuple[str, ...] = ()
    password_scrubbed: bool = False
    truncated: bool = False
    object_kind: str | None = None
    object_name: str | None = None
    grantees: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------
# tokens

_WS, _COMMENT, _LIT, _PARAM, _WORD, _QIDENT, _OP, _SQLC = (
    "ws",
    "comment",
    "lit",
    "param",
    "word",
    "qident",
    "op",
    "sqlcommenter",
)


@dataclass
class _Tok:
    kind: str
    text: str  # original text (for comments and literals: never rendered)
    start: int = 0
    end: int = 0


_IDENT_START = re.compile(r"[A-Za-z_\u0080-\uffff]")
_WORD_RE = re.compile(r"[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*")
_DIGITS = frozenset("0123456789")
_NUMBER_RE = re.compile(
    r"0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)
_PARAM_RE = re.compile(r"\$\d+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_OPS2 = ("::", "<=", ">=", "<>", "!=", "||", "->>", "->", "#>>", "#>", "=>", ":=", "@>", "<@", "&&")


def _tokenize(
    sql: str, *, standard_conforming_strings: bool = True, mysql: bool = False
) -> tuple[list[_Tok], bool]:
    """Tokens of ``sql`` and whether a literal/comment ran to the end unterminated."""
    toks: list[_Tok] = []
    i, n = 0, len(sql)
    truncated = False
    while i < n:
        c = sql[i]
        start = i
        if c.isspace():
            while i < n and sql[i].isspace():
                i += 1
            toks.append(_Tok(_WS, sql[start:i], start, i))
            continue
        if (c == "-" and sql.startswith("--", i)) or (mysql and c == "#"):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            toks.append(_Tok(_COMMENT, sql[start:i], start, i))
            continue
        if c == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            if depth:
                truncated = True
            toks.append(_Tok(_COMMENT, sql[start:i], start, i))
            continue
        # string constants, with their optional prefix letter
        prefix_len = 0
        backslash = not standard_conforming_strings
        if c in "eEbBxXnN" and i + 1 < n and sql[i + 1] == "'" and not _continues_word(toks, sql, i):
            prefix_len = 1
            backslash = backslash or c in "eE"
        elif c in "uU" and sql.startswith("&'", i + 1) and not _continues_word(toks, sql, i):
            prefix_len = 2
        if c == "'" or prefix_len:
            i += prefix_len + 1
            closed = False
            while i < n:
                ch = sql[i]
                if backslash and ch == "\\":
                    i += 2
                    continue
                if ch == "'":
                    if i + 1 < n and sql[i + 1] == "'":
                        i += 2
                        continue
                    i += 1
                    closed = True
                    break
                i += 1
            if not closed:
                truncated, i = True, n
            toks.append(_Tok(_LIT, sql[start:i], start, i))
            continue
        if c == "$":
            m = _PARAM_RE.match(sql, i)
            if m:
                i = m.end()
                toks.append(_Tok(_PARAM, m.group(0), start, i))
                continue
            m = _DOLLAR_TAG.match(sql, i)
            if m and not _continues_word(toks, sql, i):
                tag = m.group(0)
                j = sql.find(tag, m.end())
                if j < 0:
                    truncated, i = True, n
                else:
                    i = j + len(tag)
                toks.append(_Tok(_LIT, sql[start:i], start, i))
                continue
        if mysql and c == '"':  # MySQL: a double-quoted text is a string (backslash escapes)
            i += 1
            while i < n and sql[i] != '"':
                i += 2 if sql[i] == "\\" else 1
            if i >= n:
                truncated, i = True, n
            else:
                i += 1
            toks.append(_Tok(_LIT, sql[start:i], start, i))
            continue
        if mysql and c == "`":  # MySQL: a back-quoted identifier
            j = sql.find("`", i + 1)
            i = n if j < 0 else j + 1
            toks.append(_Tok(_QIDENT, sql[start:i], start, i))
            continue
        if c == '"':
            i += 1
            closed = False
            while i < n:
                if sql[i] == '"':
                    if i + 1 < n and sql[i + 1] == '"':
                        i += 2
                        continue
                    i += 1
                    closed = True
                    break
                i += 1
            if not closed:  # an unterminated identifier may be a cut-off value: hide it
                truncated, i = True, n
                toks.append(_Tok(_LIT, sql[start:i], start, i))
            else:
                toks.append(_Tok(_QIDENT, sql[start:i], start, i))
            continue
        if c in _DIGITS or (c == "." and i + 1 < n and sql[i + 1] in _DIGITS):
            m = _NUMBER_RE.match(sql, i)
            assert m is not None
            i = m.end()
            # ``1abc`` is not valid SQL; swallow trailing identifier characters into the number
            while i < n and (sql[i].isalnum() or sql[i] == "_"):
                i += 1
            toks.append(_Tok(_LIT, sql[start:i], start, i))
            continue
        if _IDENT_START.match(c):
            m = _WORD_RE.match(sql, i)
            assert m is not None
            i = m.end()
            toks.append(_Tok(_WORD, m.group(0), start, i))
            continue
        for op in _OPS2:
            if sql.startswith(op, i):
                i += len(op)
                break
        else:
            i += 1
        toks.append(_Tok(_OP, sql[start:i], start, i))
    return toks, truncated


def _continues_word(toks: list[_Tok], sql: str, i: int) -> bool:
    """Whether position ``i`` directly continues an identifier (so ``abc'`` is no prefix)."""
    return bool(toks) and toks[-1].end == i and toks[-1].kind in (_WORD, _PARAM, _LIT)


# --------------------------------------------------------------------------------------------
# sqlcommenter and traceparent

_SQLC_PAIR = re.compile(r"\s*([A-Za-z0-9_.%~-]+)\s*=\s*'((?:[^'\\]|\\.)*)'\s*")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_.-]")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", re.I)


def _sqlcommenter(comment: str) -> dict[str, str] | None:
    """``{key: value}`` of a ``/*k='v',...*/`` comment (URL-decoded), or None if it is not one."""
    if not comment.startswith("/*") or not comment.endswith("*/"):
        return None
    body = comment[2:-2]
    pairs: dict[str, str] = {}
    pos = 0
    while True:
        m = _SQLC_PAIR.match(body, pos)
        if not m:
            return None
        key = unquote(m.group(1))
        value = unquote(m.group(2).replace("\\'", "'"))
        pairs[key] = value
        pos = m.end()
        if pos == len(body):
            return pairs or None
        if body[pos] != ",":
            return None
        pos += 1


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of a W3C traceparent (lower-case hex), or None if invalid."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if not m:
        return None
    version, trace_id, span_id = m.group(1).lower(), m.group(2).lower(), m.group(3).lower()
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id


# --------------------------------------------------------------------------------------------
# normalisation

# Keywords after which a ``-`` is a sign, not a subtraction.
_SIGN_CONTEXT = frozenset(
    [
        "select",
        "where",
        "and",
        "or",
        "not",
        "then",
        "else",
        "when",
        "return",
        "returning",
        "values",
        "in",
        "by",
        "limit",
        "offset",
        "as",
        "is",
        "between",
        "set",
        "case",
        "on",
        "having",
        "like",
        "ilike",
        "using",
        "default",
        "array",
        "any",
        "all",
        "some",
        "interval",
        "to",
        "from",
        "into",
        "with",
        "do",
        "if",
        "elsif",
    ]
)
_BOOLEANS = frozenset({"true", "false"})


def _render(parts: list[tuple[str, bool]]) -> str:
    out: list[str] = []
    for text, space in parts:
        if space and out:
            out.append(" ")
        out.append(text)
    return "".join(out)


def _significant(parts: list[tuple[str, bool]]) -> str | None:
    return parts[-1][0] if parts else None


def _collapse_lists(parts: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """``IN (?, ?, ?)`` -> ``IN (?)``, ``ARRAY[?, ?]`` -> ``ARRAY[?]``, repeated VALUES rows -> one."""
    out: list[tuple[str, bool]] = []
    i = 0
    n = len(parts)
    while i < n:
        text, space = parts[i]
        out.append((text, space))
        low = text.lower()
        opener = None
        if low == "in" and i + 1 < n and parts[i + 1][0] == "(":
            opener, closer = "(", ")"
        elif low == "array" and i + 1 < n and parts[i + 1][0] == "[":
            opener, closer = "[", "]"
        if opener is not None:
            j = i + 2
            items: list[str] = []
            expect_item = True
            ok = False
            while j < n:
                t = parts[j][0]
                if expect_item and (t == "?" or t.startswith("$")):
                    items.append(t)
                    expect_item = False
                elif not expect_item and t == ",":
                    expect_item = True
                elif not expect_item and t == closer:
                    ok = True
                    break
                else:
                    break
                j += 1
            if ok and items:
                out.append((opener, parts[i + 1][1]))
                out.append((items[0], False))
                out.append((closer, False))
                i = j + 1
                continue
        if low == "values" and i + 1 < n and parts[i + 1][0] == "(":
            rows: list[list[tuple[str, bool]]] = []
            j = i + 1
            while j < n and parts[j][0] == "(":
                depth, k = 0, j
                while k < n:
                    if parts[k][0] in ("(", "["):
                        depth += 1
                    elif parts[k][0] in (")", "]"):
                        depth -= 1
                        if depth == 0:
                            break
                    k += 1
                if k >= n:
                    break
                rows.append(parts[j : k + 1])
                j = k + 1
                if j < n and parts[j][0] == "," and j + 1 < n and parts[j + 1][0] == "(":
                    j += 1
                    continue
                break
            if len(rows) > 1 and len({_render([(t, False) for t, _ in r]) for r in rows}) == 1:
                out.extend(rows[0])
                i = j
                continue
        i += 1
    return out


def _normalize_tokens(toks: list[_Tok]) -> tuple[str, tuple[str, ...], tuple[str, str] | None]:
    parts: list[tuple[str, bool]] = []
    keys: list[str] = []
    trace: tuple[str, str] | None = None
    pending_space = False
    for tok in toks:
        if tok.kind == _WS:
            pending_space = True
            continue
        if tok.kind == _COMMENT:
            pairs = _sqlcommenter(tok.text)
            if pairs is None:
                pending_space = True
                continue
            for key, value in pairs.items():
                if key not in keys:
                    keys.append(key)
                if key.lower() == "traceparent" and trace is None:
                    trace = parse_traceparent(value)
            shown = ",".join(_UNSAFE_KEY.sub("_", key) for key in pairs)
            parts.append(("/*" + shown + "*/", True))
            pending_space = True
            continue
        if tok.kind == _LIT or (tok.kind == _WORD and tok.text.lower() in _BOOLEANS):
            prev = _significant(parts)
            if prev == "-" and tok.kind == _LIT and tok.text[:1] in "0123456789.":
                before = parts[-2][0].lower() if len(parts) >= 2 else None
                unary = (
                    before is None
                    or before in _SIGN_CONTEXT
                    or (
                        not before[:1].isalnum()
                        and before[:1] not in ('"', "_", "$", "?")
                        and before not in (")", "]")
                    )
                )
                if unary:
                    space = parts[-1][1]
                    parts.pop()
                    parts.append(("?", space))
                    pending_space = False
                    continue
            parts.append(("?", pending_space))
        else:
            parts.append((tok.text, pending_space))
        pending_space = False
    parts = _collapse_lists(parts)
    while parts and parts[-1][0] == ";":
        parts.pop()
    return _render(parts), tuple(keys), trace


def normalize(sql: str, *, standard_conforming_strings: bool = True, mysql: bool = False) -> str:
    """``sql`` with literals replaced by ``?`` (see the module docstring)."""
    toks, _ = _tokenize(sql, standard_conforming_strings=standard_conforming_strings, mysql=mysql)
    return _normalize_tokens(toks)[0]


_QUOTES = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?")
_NUMBERS = re.compile(r"(?<![A-Za-z_$])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![A-Za-z_])")


def scrub_message(text: str) -> str:
    """A server message (``ERROR``, ``DETAIL``...) with every quoted part and number replaced by
    ``?``: error texts quote offending values (``invalid input syntax for type integer: "x"``).
    """
    return _NUMBERS.sub("?", _QUOTES.sub("?", text))


# --------------------------------------------------------------------------------------------
# commands and classes

_MULTI_WORD = {
    # second words that belong to the command tag: CREATE <these> ...
    "table",
    "index",
    "view",
    "sequence",
    "schema",
    "database",
    "extension",
    "function",
    "procedure",
    "trigger",
    "type",
    "domain",
    "role",
    "policy",
    "publication",
    "subscription",
    "server",
    "tablespace",
    "aggregate",
    "operator",
    "collation",
    "conversion",
    "language",
    "rule",
    "statistics",
    "cast",
    "transform",
    "event",
    "foreign",
    "materialized",
    "text",
    "access",
    "default",
    "system",
    "large",
    "routine",
    "owned",
    "user",
    "group",
}
_ROLE_ALIASES = {"user": "role", "group": "role"}
_ROLE_COMMANDS = frozenset(
    {
        "GRANT",
        "REVOKE",
        "CREATE ROLE",
        "ALTER ROLE",
        "DROP ROLE",
        "ALTER DEFAULT PRIVILEGES",
        "REASSIGN OWNED",
        "DROP OWNED",
        "SET ROLE",
        "SET SESSION AUTHORIZATION",
        "RESET ROLE",
        "RESET SESSION AUTHORIZATION",
    }  # fmt: skip
)
_READ = frozenset({"SELECT", "SHOW", "FETCH", "TABLE", "VALUES", "EXPLAIN", "COPY TO", "MOVE"})
_WRITE = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "COPY FROM", "COPY", "SELECT INTO"})
_FUNCTION = frozenset({"CALL", "DO", "EXECUTE FUNCTION"})
_DDL_VERBS = frozenset({"CREATE", "ALTER", "DROP", "COMMENT", "SECURITY LABEL", "IMPORT FOREIGN SCHEMA", "REFRESH MATERIALIZED VIEW"})  # fmt: skip


def _words(toks: list[_Tok]) -> list[_Tok]:
    return [t for t in toks if t.kind not in (_WS, _COMMENT)]


def _top_level_verb_after_with(sig: list[_Tok]) -> str | None:
    depth = 0
    for tok in sig[1:]:
        if tok.kind == _OP and tok.text in ("(", "["):
            depth += 1
        elif tok.kind == _OP and tok.text in (")", "]"):
            depth -= 1
        elif (
            depth == 0
            and tok.kind == _WORD
            and tok.text.upper() in ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE")
        ):
            return tok.text.upper()
    return None


def _command_from_tokens(toks: list[_Tok]) -> str:
    sig = _words(toks)
    while sig and sig[0].kind == _OP and sig[0].text == "(":
        sig = sig[1:]
    if not sig or sig[0].kind != _WORD:
        return ""
    w = [t.text.lower() if t.kind == _WORD else t.text for t in sig[:8]]
    first = w[0]
    if first in ("create", "alter", "drop"):
        rest = w[1:]
        # CREATE OR REPLACE ..., CREATE UNIQUE INDEX, CREATE TEMP TABLE, CREATE UNLOGGED TABLE...
        while rest and rest[0] in ("or", "replace", "unique", "temp", "temporary", "unlogged", "global", "local", "trusted", "procedural", "recursive", "constraint", "concurrently"):  # fmt: skip
            rest = rest[1:]
        if not rest:
            return first.upper()
        obj = rest[0]
        if obj in (
            "materialized",
            "foreign",
            "text",
            "access",
            "event",
            "default",
            "large",
            "owned",
            "user",
            "system",
        ):
            two = " ".join(rest[:2])
            if two == "user mapping":
                return f"{first} user mapping".upper()
            if obj == "user":
                return f"{first} role".upper()
            if obj in ("owned", "system"):
                return f"{first} {obj}".upper()
            if two in ("text search",):
                return f"{first} {' '.join(rest[:3])}".upper()
            if two == "default privileges":
                return f"{first} default privileges".upper()
            return f"{first} {two}".upper()
        if obj in _MULTI_WORD:
            return f"{first} {_ROLE_ALIASES.get(obj, obj)}".upper()
        return f"{first} {obj}".upper()
    if first == "with":
        verb = _top_level_verb_after_with(sig)
        return verb or "SELECT"
    if first == "select":
        # SELECT ... INTO new_table (not PL/pgSQL) creates a table
        depth = 0
        for tok in sig[1:]:
            if tok.kind == _OP and tok.text == "(":
                depth += 1
            elif tok.kind == _OP and tok.text == ")":
                depth -= 1
            elif depth == 0 and tok.kind == _WORD and tok.text.lower() == "into":
                return "SELECT INTO"
            elif depth == 0 and tok.kind == _WORD and tok.text.lower() == "from":
                break
        return "SELECT"
    if first == "copy":
        for tok in sig[1:]:
            if tok.kind == _WORD and tok.text.lower() in ("from", "to"):
                return f"COPY {tok.text.upper()}"
        return "COPY"
    if first in ("start",):
        return "START TRANSACTION"
    if first in ("end",):
        return "COMMIT"
    if first == "abort":
        return "ROLLBACK"
    if first == "set" or first == "reset":
        nxt = w[1:3]
        if nxt[:1] == ["role"]:
            return f"{first} role".upper()
        if nxt[:2] == ["session", "authorization"]:
            return f"{first} session authorization".upper()
        if nxt[:1] in (["local"], ["session"]) and w[2:3] == ["role"]:
            return f"{first} role".upper()
        if nxt[:1] in (["local"], ["session"]) and w[2:4] == ["session", "authorization"]:
            return f"{first} session authorization".upper()
        return first.upper()
    if first == "security" and w[1:2] == ["label"]:
        return "SECURITY LABEL"
    if first == "refresh":
        return "REFRESH MATERIALIZED VIEW"
    if first == "reassign":
        return "REASSIGN OWNED"
    if first == "import":
        return "IMPORT FOREIGN SCHEMA"
    if first == "explain":
        return "EXPLAIN"
    return first.upper()


def command_tag(sql: str) -> str:
    """The command tag of a statement (``SELECT``, ``CREATE TABLE``, ``ALTER ROLE``...)."""
    return _command_from_tokens(_tokenize(sql)[0])


def statement_class(command: str) -> str:
    """pgaudit's class of a command tag: ``READ``, ``WRITE``, ``FUNCTION``, ``ROLE``, ``DDL`` or ``MISC``.

    ``CREATE/ALTER/DROP ROLE`` (and ``USER``/``GROUP``), ``GRANT``, ``REVOKE``, ``ALTER DEFAULT
    PRIVILEGES``, ``REASSIGN OWNED``, ``DROP OWNED``, ``SET ROLE`` and ``SET SESSION
    AUTHORIZATION`` are ``ROLE``; other ``CREATE/ALTER/DROP``, ``COMMENT``, ``SECURITY LABEL``,
    ``REFRESH MATERIALIZED VIEW`` are ``DDL``; ``INSERT/UPDATE/DELETE/MERGE/TRUNCATE/COPY FROM``
    and ``SELECT INTO`` are ``WRITE``; ``SELECT``, ``SHOW``, ``FETCH``, ``EXPLAIN``, ``COPY TO`` are
    ``READ``; ``CALL``/``DO`` are ``FUNCTION``; everything else (``SET``, ``BEGIN``, ``PREPARE``,
    ``VACUUM``...) is ``MISC``.
    """
    cmd = command.upper().strip()
    if cmd in _ROLE_COMMANDS:
        return "ROLE"
    if cmd in _WRITE:
        return "WRITE"
    if cmd in _READ:
        return "READ"
    if cmd in _FUNCTION:
        return "FUNCTION"
    if any(cmd == v or cmd.startswith(v + " ") for v in _DDL_VERBS):
        return "DDL"
    return "MISC"


# --------------------------------------------------------------------------------------------
# main object


def _ident(tok: _Tok) -> str:
    """An identifier as PostgreSQL resolves it: quoted -> verbatim, unquoted -> lower case."""
    if tok.kind == _QIDENT and tok.text.startswith("`"):
        return tok.text.strip("`")
    if tok.kind == _QIDENT:
        return tok.text[1:-1].replace('""', '"')
    return tok.text.lower()


def _name_at(sig: list[_Tok], i: int) -> tuple[str | None, int]:
    """A possibly schema-qualified identifier starting at ``sig[i]`` and the index after it."""
    parts: list[str] = []
    while i < len(sig) and sig[i].kind in (_WORD, _QIDENT):
        parts.append(_ident(sig[i]))
        if (
            i + 2 < len(sig)
            and sig[i + 1].kind == _OP
            and sig[i + 1].text == "."
            and sig[i + 2].kind in (_WORD, _QIDENT)
        ):
            i += 2
            continue
        i += 1
        break
    return (".".join(parts) if parts else None), i


def _skip(sig: list[_Tok], i: int, *words: str) -> int:
    while i < len(sig) and sig[i].kind == _WORD and sig[i].text.lower() in words:
        i += 1
    return i


def _find_word(sig: list[_Tok], start: int, word: str) -> int:
    depth = 0
    for i in range(start, len(sig)):
        t = sig[i]
        if t.kind == _OP and t.text == "(":
            depth += 1
        elif t.kind == _OP and t.text == ")":
            depth -= 1
        elif depth == 0 and t.kind == _WORD and t.text.lower() == word:
            return i
    return -1


_OBJECT_WORDS = ("table", "sequence", "view", "function", "procedure", "routine", "schema", "database", "type", "domain", "language", "tablespace", "foreign", "large", "object", "server", "data", "wrapper", "materialized", "index", "extension", "role", "policy", "trigger", "publication", "subscription", "all", "tables", "in", "sequences", "functions")  # fmt: skip


_NAMED_KINDS = frozenset(
    {
        "table",
        "view",
        "index",
        "sequence",
        "schema",
        "database",
        "extension",
        "function",
        "procedure",
        "trigger",
        "type",
        "domain",
        "role",
        "policy",
        "publication",
        "subscription",
        "server",
        "tablespace",
        "aggregate",
        "collation",
        "routine",
    }  # fmt: skip
)


def _main_object(toks: list[_Tok], command: str) -> tuple[str | None, str | None, tuple[str, ...]]:
    sig = _words(toks)
    cmd = command.upper()
    if not sig:
        return None, None, ()
    if cmd in ("INSERT",):
        i = _find_word(sig, 0, "into")
        name, _ = _name_at(sig, i + 1) if i >= 0 else (None, 0)
        return ("table" if name else None), name, ()
    if cmd in ("UPDATE",):
        i = _find_word(sig, 0, "update")
        name, _ = _name_at(sig, _skip(sig, i + 1, "only")) if i >= 0 else (None, 0)
        return ("table" if name else None), name, ()
    if cmd in ("DELETE",):
        i = _find_word(sig, 0, "from")
        name, _ = _name_at(sig, _skip(sig, i + 1, "only")) if i >= 0 else (None, 0)
        return ("table" if name else None), name, ()
    if cmd in ("MERGE",):
        i = _find_word(sig, 0, "into")
        name, _ = _name_at(sig, _skip(sig, i + 1, "only")) if i >= 0 else (None, 0)
        return ("table" if name else None), name, ()
    if cmd == "TRUNCATE":
        name, _ = _name_at(sig, _skip(sig, 1, "table", "only"))
        return ("table" if name else None), name, ()
    if cmd.startswith("COPY"):
        name, _ = _name_at(sig, 1)
        return ("table" if name else None), name, ()
    if cmd in ("GRANT", "REVOKE"):
        on = _find_word(sig, 1, "on")
        target = _find_word(sig, 1, "to" if cmd == "GRANT" else "from")
        grantees: list[str] = []
        if target >= 0:
            j = target + 1
            while j < len(sig):
                j = _skip(sig, j, "group", "role")
                name, j2 = _name_at(sig, j)
                if name is None:
                    break
                grantees.append(name)
                j = j2
                if j < len(sig) and sig[j].kind == _OP and sig[j].text == ",":
                    j += 1
                    continue
                break
        if on >= 0:
            j = on + 1
            kind = "table"
            if j < len(sig) and sig[j].kind == _WORD and sig[j].text.lower() in _OBJECT_WORDS:
                kind = sig[j].text.lower()
                if kind == "all":
                    return "schema", None, tuple(grantees)
                j = _skip(sig, j, *_OBJECT_WORDS)
            name, _ = _name_at(sig, j)
            return (kind if name else None), name, tuple(grantees)
        # GRANT role TO user: the granted role is the object
        name, _ = _name_at(sig, 1)
        return ("role" if name else None), name, tuple(grantees)
    parts = cmd.split(" ")
    if parts[0] in ("CREATE", "ALTER", "DROP") and len(parts) >= 2 and parts[-1].lower() in _NAMED_KINDS:
        kind = parts[-1].lower()
        # position after the object keyword(s)
        i = 1
        i = _skip(sig, i, "or", "replace", "unique", "temp", "temporary", "unlogged", "global", "local", "materialized", "foreign", "concurrently", "recursive", "trusted", "procedural")  # fmt: skip
        i = _skip(sig, i, kind, "user", "group", "role") if kind == "role" else _skip(sig, i, kind)
        i = _skip(sig, i, "if", "not", "exists", "only", "concurrently")
        name, _ = _name_at(sig, i)
        if kind == "index" and parts[0] == "CREATE":
            on = _find_word(sig, i, "on")
            table, _ = _name_at(sig, _skip(sig, on + 1, "only")) if on >= 0 else (None, 0)
            if table:
                return "table", table, ()
        return (kind if name else None), name, ()
    return None, None, ()


# --------------------------------------------------------------------------------------------


def _password_literals(toks: list[_Tok]) -> list[_Tok]:
    """String literals that follow ``PASSWORD`` (skipping whitespace and comments)."""
    found: list[_Tok] = []
    sig = _words(toks)
    for i, tok in enumerate(sig):
        if (
            tok.kind == _WORD
            and tok.text.lower() == "password"
            and i + 1 < len(sig)
            and sig[i + 1].kind == _LIT
        ):
            found.append(sig[i + 1])
    return found


def analyze(sql: str, *, standard_conforming_strings: bool = True, mysql: bool = False) -> Statement:
    """Normalised form, fingerprint, command, class, trace context and main object of ``sql``.

    ``mysql=True`` reads MySQL's lexical rules instead (Debezium's MySQL ``source.query``):
    ``"..."`` is a string, backslashes escape inside strings, and back quotes quote identifiers.
    """
    if mysql:
        standard_conforming_strings = False
    toks, truncated = _tokenize(sql, standard_conforming_strings=standard_conforming_strings, mysql=mysql)
    normalized, keys, trace = _normalize_tokens(toks)
    secrets = _password_literals(toks)
    hashed = sql
    for lit in reversed(secrets):
        hashed = hashed[: lit.start] + "<REDACTED>" + hashed[lit.end :]
    command = _command_from_tokens(toks)
    kind, name, grantees = _main_object(toks, command)
    return Statement(
        normalized=normalized,
        hash=keyed.current().tag(hashed),
        command=command,
        statement_class=statement_class(command) if command else "MISC",
        trace_id=trace[0] if trace else None,
        span_id=trace[1] if trace else None,
        comment_keys=keys,
        password_scrubbed=bool(secrets),
        truncated=truncated,
        object_kind=kind,
        object_name=name,
        grantees=grantees,
    )
