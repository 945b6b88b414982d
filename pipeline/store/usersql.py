"""What a user's SQL may be, checked before it reaches ClickHouse (pure; no client imports).

ClickHouse's ``readonly=1`` refuses writes, DDL, ``SET``, settings clauses and table functions,
but it still runs ``USE``, ``KILL QUERY``, ``SYSTEM``-free control statements and, on chDB,
several statements separated by ``;``. A user query is therefore also checked here: one
statement, starting (after comments and parentheses) with ``SELECT``, ``WITH``, ``SHOW``,
``DESCRIBE``/``DESC`` or ``EXPLAIN``. The lexer knows ClickHouse's quoting (``'..'`` with
backslash escapes and doubled quotes, ``".."`` and backticks for identifiers) and comments
(``--``, ``#``, ``/* */``), so a ``;`` inside a string or a comment is not a separator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.errors import QueryError
from pipeline.sources import keyed

#: First keywords a user query may start with.
ALLOWED = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN")

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|0[bB][01]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")


@dataclass(frozen=True)
class _Tok:
    kind: str  # word, number, string, ident, comment, space, semicolon, other
    text: str


def _quoted(sql: str, i: int, quote: str) -> int:
    """Index just past the quoted token starting at ``i``; QueryError if it never closes."""
    j = i + 1
    while j < len(sql):
        c = sql[j]
        if c == "\\":
            j += 2
            continue
        if c == quote:
            if j + 1 < len(sql) and sql[j + 1] == quote:  # doubled quote inside
                j += 2
                continue
            return j + 1
        j += 1
    raise QueryError(f"query rejected: unterminated {quote}-quoted text starting at character {i + 1}")


def _tokens(sql: str) -> Iterator[_Tok]:
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            j = i
            while j < n and sql[j].isspace():
                j += 1
            yield _Tok("space", sql[i:j])
        elif sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            yield _Tok("comment", sql[i:j])
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise QueryError(f"query rejected: unterminated /* comment starting at character {i + 1}")
            j += 2
            yield _Tok("comment", sql[i:j])
        elif c in "'\"`":
            j = _quoted(sql, i, c)
            yield _Tok("string" if c == "'" else "ident", sql[i:j])
        elif c == ";":
            j = i + 1
            yield _Tok("semicolon", c)
        elif (m := _WORD.match(sql, i)) is not None:
            j = m.end()
            yield _Tok("word", m.group())
        elif (m := _NUMBER.match(sql, i)) is not None:
            j = m.end()
            yield _Tok("number", m.group())
        else:
            j = i + 1
            yield _Tok("other", c)
        i = j


def check(sql: str) -> str:
    """The statement to run for the user's ``sql``, or QueryError saying why it is refused.

    Trailing semicolons are dropped (ClickHouse clients append their own ``FORMAT``).
    """
    toks = list(_tokens(sql))
    first = next((t for t in toks if t.kind not in ("space", "comment") and t.text != "("), None)
    if first is None:
        raise QueryError("query rejected: the query is empty")
    if first.kind != "word" or first.text.upper() not in ALLOWED:
        raise QueryError(
            f"query rejected: only {', '.join(a for a in ALLOWED if a != 'DESC')} queries are allowed "
            f"(this one starts with {first.text[:40]!r})"
        )
    end = len(toks)
    for k, t in enumerate(toks):
        if t.kind == "semicolon":
            if any(u.kind not in ("space", "comment", "semicolon") for u in toks[k + 1:]):
                raise QueryError("query rejected: one statement per query (found a ';' followed by more SQL)")
            end = k
            break
    return "".join(t.text for t in toks[:end]).rstrip()


def normalize(sql: str) -> str:
    """``sql`` with literals replaced by ``?`` and blanks collapsed: what the audit trail keeps.

    Text that does not lex (an unterminated string) is kept only as its hash.
    """
    try:
        toks = list(_tokens(sql))
    except QueryError:
        return f"unparsed:{sql_hash(sql)}"
    out: list[str] = []
    for t in toks:
        if t.kind in ("string", "number"):
            out.append("?")
        elif t.kind in ("space", "comment"):
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(t.text)
    return "".join(out).strip()


def sql_hash(sql: str) -> str:
    """Keyed hash of a query's full text for the audit trail (never the text itself): the
    deployment's HMAC (:mod:`pipeline.sources.keyed`), so its literals cannot be guessed back."""
    return keyed.current().tag(sql)
