"""Self-contained HTML reports (pure): one file, inline CSS and SVG, no script, no network.

A shared report must open anywhere -- a laptop offline, an attachment in a ticket -- and say the
same thing it said when written: everything it shows is in the file. Every value from the data is
escaped; the only markup is ours.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

_CSS = """
:root{--fg:#1d2330;--dim:#667085;--line:#d0d5dd;--bg:#fff;--card:#f8f9fb;--red:#b42318;--accent:#175cd3}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);
background:var(--bg);margin:0;padding:24px 32px;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}.dim{color:var(--dim)}.fail{color:var(--red);font-weight:600}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid var(--line);vertical-align:top}th{background:var(--card);font-weight:600}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}pre{background:var(--card);padding:8px;
border:1px solid var(--line);border-radius:6px;overflow:auto;white-space:pre-wrap}
.kind{display:inline-block;padding:0 6px;border-radius:10px;background:#eef4ff;color:var(--accent);font-size:12px}
.cause{border:1px solid var(--line);border-radius:8px;padding:8px 14px;margin:12px 0;background:var(--bg)}
.symptom{border-left:4px solid var(--red);padding:4px 10px;margin:6px 0;background:#fef3f2}
.person{color:#067647;font-weight:600}td.t,.causes td:nth-child(5){white-space:nowrap}svg{max-width:100%;height:auto}
svg .node rect{fill:var(--card);stroke:#98a2b3}svg .node.focus rect{fill:#eef4ff;stroke:var(--accent);stroke-width:2}
svg .node.failure rect{stroke:var(--red)}svg text{font:12px system-ui,sans-serif;fill:var(--fg)}
svg text.sub{fill:var(--dim);font-size:11px}svg path{fill:none;stroke:#98a2b3;stroke-width:1.5}
"""

NODE_W, NODE_H, GAP = 420, 46, 18


def esc(value: Any) -> str:
    """Text of any value, HTML-escaped (datetimes as ISO, no microseconds noise)."""
    if isinstance(value, datetime):
        value = value.isoformat(sep=" ").replace("+00:00", "Z")
    return html.escape("" if value is None else str(value), quote=True)


_ISO = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]00:00)?$")


def tm(value: Any) -> str:
    """A UTC time as ``2026-11-27 02:14:00`` (escaped); other values as :func:`esc`."""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    found = _ISO.match(text)
    return esc(f"{found.group(1)} {found.group(2)}" if found else value)


def page(title: str, body: str) -> str:
    """A whole HTML document with the report styles inlined."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def who(e: Mapping[str, Any]) -> str:
    """Actor (assurance), the person behind it, and who opened the session it used."""
    out = f"<code>{esc(e.get('actor_id'))}</code> ({esc(e.get('actor_assurance'))})"
    person = e.get("person")
    origin = e.get("session_origin")
    if origin:
        name = person.get("id") if person else origin.get("actor")
        return out + (f' — <span class="person">{esc(name)}</span> ({esc(origin.get("summary"))})'
                      f' <span class="dim">through the session opened by {esc(origin.get("actor"))}</span>')
    if person:
        out += f' — <span class="person">{esc(person.get("id"))}</span>'
        if person.get("name") and person.get("name") != person.get("id"):
            out += f" ({esc(person['name'])})"
    return out


def _label(e: Mapping[str, Any]) -> tuple[str, str]:
    person = (e.get("person") or {}).get("id")
    origin = e.get("session_origin") or {}
    sub = f"{e.get('actor_id')} ({e.get('actor_assurance')})"
    if person:
        sub += f" — {person}"
    if origin:
        sub += f" [{origin.get('assurance')} at session start]"
    return f"{e.get('type')} · {e.get('target_id')}", sub


def _edges(events: Sequence[Mapping[str, Any]], edges: Iterable[Mapping[str, Any]] | None) -> list[tuple[str, str, str]]:
    """(from, to, key) edges: the stored ones when given, else consecutive events on each link key."""
    if edges is not None:
        return [(str(x["from"]), str(x["to"]), str(x.get("key", ""))) for x in edges]
    out: list[tuple[str, str, str]] = []
    last: dict[str, str] = {}
    for e in sorted(events, key=lambda x: (str(x.get("time")), str(x["id"]))):
        for k in e.get("links", ()):
            if str(k) in last and last[str(k)] != str(e["id"]):
                out.append((str(e["id"]), last[str(k)], str(k)))
            last[str(k)] = str(e["id"])
    return list(dict.fromkeys(out))


def _trim(text: str, n: int = 62) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def chain_graph(events: Sequence[Mapping[str, Any]], *, focus: str | None = None,
                edges: Iterable[Mapping[str, Any]] | None = None) -> str:
    """An inline SVG of a chain: one node per event in time order (top to bottom), an arrow from
    each event to its predecessor on a shared key (commit -> review -> CI -> deploy; role ->
    session -> query). ``focus`` (an event id) is highlighted. Nodes carry ``data-event-id``."""
    ordered = sorted(events, key=lambda x: (str(x.get("time")), str(x["id"])))
    pos = {str(e["id"]): n for n, e in enumerate(ordered)}
    links = [(a, b, k) for a, b, k in _edges(ordered, edges) if a in pos and b in pos]
    width = NODE_W + 60 + 14 * min(len(links), 20)
    height = len(ordered) * (NODE_H + GAP) + GAP
    parts = [f'<svg class="chain" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="chain of {len(ordered)} events">']
    for n, (a, b, k) in enumerate(links):
        ya = GAP + pos[a] * (NODE_H + GAP) + NODE_H / 2
        yb = GAP + pos[b] * (NODE_H + GAP) + NODE_H / 2
        x = 40 + NODE_W
        bend = x + 14 * (1 + n % 20)
        parts.append(f'<path class="edge" data-key="{esc(k)}" d="M{x} {ya} C{bend} {ya} {bend} {yb} {x} {yb}">'
                     f"<title>{esc(k)}</title></path>")
    for n, e in enumerate(ordered):
        y = GAP + n * (NODE_H + GAP)
        cls = "node" + (" focus" if str(e["id"]) == focus else "") + (" failure" if e.get("outcome") == "failure" else "")
        title, sub = _label(e)
        parts.append(f'<g class="{cls}" data-event-id="{esc(e["id"])}" data-type="{esc(e.get("type"))}">'
                     f'<rect x="40" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
                     f'<text x="50" y="{y + 18}">{esc(_trim(title))}</text>'
                     f'<text class="sub" x="50" y="{y + 36}">{esc(_trim(sub, 70))} · {tm(e.get("time"))}</text>'
                     f"<title>{esc(e['id'])}</title></g>")
    parts.append("</svg>")
    return "".join(parts)


def _json(value: Any) -> str:
    return esc(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


def _when(c: Mapping[str, Any]) -> str:
    if int(c.get("count", 1)) > 1:
        return f"{tm(c.get('first'))} … {tm(c.get('last'))} <b>×{esc(c.get('count'))}</b>"
    return tm(c["event"].get("time"))


def _cause_section(n: int, c: Mapping[str, Any]) -> str:
    e = c["event"]
    out = [f'<section class="cause" id="cause-{n}"><h3>{n}. <span class="kind">{esc(c.get("kind"))}</span> '
           f'<span class="{"fail" if e.get("outcome") == "failure" else ""}">{esc(e.get("type"))}</span> '
           f"<code>{esc(e.get('target_kind'))}:{esc(e.get('target_id'))}</code></h3>",
           f"<p>{_when(c)} by {who(e)}<br><span class='dim'>score {esc(c.get('score'))}: "
           f"{esc(', '.join(c.get('reasons', [])))}</span></p>"]
    if e.get("diff"):
        out.append(f"<h4>diff</h4><pre class='diff'>{_json(e['diff'])}</pre>")
    if e.get("statement"):
        out.append(f"<h4>statement (normalised)</h4><pre class='statement'>{esc(e['statement'])}</pre>")
    story = c.get("story") or {}
    if story:
        out.append("<table class='story'>" + "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(', '.join(map(str, v)))}</td></tr>" for k, v in story.items()) + "</table>")
    chain = c.get("chain") or []
    if chain:
        out.append(f"<h4>chain ({len(chain)} events)</h4>" + chain_graph(chain, focus=str(e["id"])))
    out.append("</section>")
    return "".join(out)


def why_html(result: Mapping[str, Any], *, generated_at: datetime | None = None) -> str:
    """The incident report of a ``why`` answer (:func:`pipeline.store.queries.why`)."""
    causes = result.get("causes", [])
    head = [f"<h1>Why {esc(result.get('target'))} at {tm(result.get('at'))} UTC</h1>",
            f"<p class='dim'>Looking {float(result.get('window_seconds', 0)) / 3600:g} h back at "
            f"{esc(', '.join(result.get('related', [])))}; {esc(result.get('candidates', len(causes)))} events"
            + (f"; generated {esc(generated_at)}" if generated_at else "") + "</p>"]
    matches = result.get("matches") or []
    if matches:
        head.append("<h2>What the name matched</h2><table class='matches'><tr><th>how</th><th>target</th>"
                    "<th>events</th></tr>" + "".join(
                        f"<tr><td>{esc(m['how'])}</td><td><code>{esc(m['kind'])}:{esc(m['id'])}</code></td>"
                        f"<td>{esc(m['events'])}</td></tr>" for m in matches) + "</table>")
    symptoms = result.get("symptoms") or []
    if symptoms:
        head.append("<h2>Symptom</h2>" + "".join(
            f"<div class='symptom'><span class='fail'>{esc(s['event'].get('type'))}</span> "
            f"<code>{esc(s['event'].get('target_id'))}</code> {_when(s)} by {who(s['event'])}</div>" for s in symptoms))
    rows = "".join(
        f"<tr><td><a href='#cause-{n}'>{n}</a></td><td><span class='kind'>{esc(c.get('kind'))}</span></td>"
        f"<td>{esc(c['event'].get('type'))}</td><td><code>{esc(c['event'].get('target_id'))}</code></td>"
        f"<td>{_when(c)}</td><td>{who(c['event'])}</td><td>{esc(c.get('score'))}</td></tr>"
        for n, c in enumerate(causes, 1))
    head.append("<h2>Ranked causes</h2>" + (
        "<table class='causes'><tr><th>#</th><th>kind</th><th>type</th><th>target</th><th>when</th><th>who</th>"
        f"<th>score</th></tr>{rows}</table>" if causes else "<p>No changes found in the window.</p>"))
    head.append(_timeline(result))
    head.append("<h2>Causes in detail</h2>" + "".join(_cause_section(n, c) for n, c in enumerate(causes, 1)))
    return page(f"why {result.get('target')}", "".join(head))


def _timeline(result: Mapping[str, Any]) -> str:
    seen: dict[str, Mapping[str, Any]] = {}
    for c in [*result.get("causes", []), *result.get("symptoms", [])]:
        for e in [c["event"], *(c.get("chain") or [])]:
            seen.setdefault(str(e["id"]), e)
    events = sorted(seen.values(), key=lambda e: (str(e.get("time")), str(e["id"])))
    rows = "".join(
        f"<tr class='{'fail' if e.get('outcome') == 'failure' else ''}'><td class='t'>{tm(e.get('time'))}</td>"
        f"<td>{esc(e.get('type'))}</td><td><code>{esc(e.get('target_id'))}</code></td><td>{who(e)}</td>"
        f"<td>{esc(e.get('outcome'))}</td></tr>" for e in events)
    return ("<h2>Timeline</h2><table class='timeline'><tr><th>time (UTC)</th><th>type</th><th>target</th>"
            f"<th>who</th><th>outcome</th></tr>{rows}</table>")


def accountability_html(report: Mapping[str, Any]) -> str:
    """The ``causelog report`` page (:func:`pipeline.report.accountability.build`)."""
    def table(title: str, rows: Iterable[Mapping[str, Any]], cols: Sequence[str]) -> str:
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
        return (f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols)
                + f"</tr>{body}</table>")

    s = report["summary"]
    parts = [f"<h1>Changes {tm(report['since'])} … {tm(report['until'])} UTC</h1>",
             f"<p>{esc(s['changes'])} changes; reviewed {esc(_pct(s['reviewed'], s['changes']))}; "
             f"verified identity {esc(_pct(s['verified'], s['changes']))}; no owner "
             f"{esc(_pct(s['unowned'], s['changes']))}.</p>",
             table("By kind", report["by_kind"], ("kind", "changes", "events")),
             table("By target", report["by_target"], ("target", "changes", "events")),
             table("By person", report["by_person"], ("person", "changes", "events")),
             table("Assurance mix", report["assurance"], ("assurance", "changes", "events")),
             table("Changes without an owner", report["unowned"], ("time", "type", "target", "actor", "id")),
             table("Access and privilege changes", report["access"], ("time", "type", "target", "actor", "id"))]
    return page("causelog report", "".join(parts))


def _cell(value: Any) -> str:
    if isinstance(value, list):
        shown = ", ".join(str(v) for v in value[:20])
        more = f" … (+{len(value) - 20})" if len(value) > 20 else ""
        return f"<code class='ids'>{esc(shown)}{esc(more)}</code>"
    return esc(value)


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "0/0"
