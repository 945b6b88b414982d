"""The HTML reports (pipeline.report), pure: escaping, self-containment, graph nodes and edges,
and the accountability figures with the events behind each."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from pipeline.report import accountability_html, build_accountability, chain_graph, why_html

AT = datetime(2026, 11, 27, 2, 14, tzinfo=UTC)


def e(i: str, minutes: float, type_: str, links: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    return {"id": i, "time": AT - timedelta(minutes=minutes), "type": type_, "action": kw.pop("action", "update"),
            "outcome": kw.pop("outcome", "success"), "target_kind": "service", "target_id": kw.pop("target", "api"),
            "actor_id": kw.pop("actor", "bob"), "actor_assurance": kw.pop("assurance", "authenticated"),
            "links": list(links), **kw}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(text: str) -> list[tuple[str, dict[str, str | None]]]:
    p = Tags()
    p.feed(text)
    return p.tags


def test_chain_graph_has_one_node_per_event_and_edges_on_shared_keys() -> None:
    chain = [e("c", 60, "git.commit", ("commit:abc",)), e("r", 50, "change.reviewed", ("change:7", "commit:abc")),
             e("ci", 40, "ci.run.succeeded", ("commit:abc",)), e("d", 30, "deploy.created", ("commit:abc",))]
    svg = chain_graph(chain, focus="d")
    nodes = [a for t, a in parse(svg) if t == "g"]
    assert [n["data-type"] for n in nodes] == ["git.commit", "change.reviewed", "ci.run.succeeded", "deploy.created"]
    assert [n["data-event-id"] for n in nodes if "focus" in str(n["class"])] == ["d"]
    assert len([a for t, a in parse(svg) if t == "path"]) == 3  # r->c, ci->r, d->ci on commit:abc
    stored = chain_graph(chain, edges=[{"from": "d", "to": "c", "key": "commit:abc"}])
    assert len([a for t, a in parse(stored) if t == "path"]) == 1


def test_why_report_is_self_contained_and_escapes_the_data() -> None:
    evil = "<script>alert(1)</script>"
    cause = e("x", 10, "config.changed", diff={"after": {"note": evil}}, statement="SELECT '<b>'")
    answer = {"target": evil, "at": AT, "window_seconds": 3600, "related": [evil], "candidates": 3,
              "matches": [{"kind": "service", "id": "api", "name": "", "service": "", "how": "target.id", "events": 1}],
              "causes": [{"score": 110.0, "kind": "config", "reasons": ["config change +100"], "count": 1,
                          "first": cause["time"], "last": cause["time"], "event": cause, "story": {"actors": [evil]},
                          "chain": [cause]}],
              "symptoms": [{"score": 10, "kind": "read", "count": 1, "first": AT, "last": AT,
                            "event": e("f", 0, "db.failed", outcome="failure"), "story": {}, "chain": []}]}
    page = why_html(answer)
    assert evil not in page and "&lt;script&gt;" in page
    tags = parse(page)
    assert not [t for t, _ in tags if t == "script"]
    assert not [a for t, a in tags if t in ("link", "img", "iframe") or (t == "a" and not str(a.get("href")).startswith("#"))]
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # no network reference at all
    assert page.count('class="node focus"') == 1 and "db.failed" in page


def test_accountability_figures_list_their_events() -> None:
    rows = [
        e("cfg", 10, "config.changed", ("commit:1",), assurance="claimed", person={"id": "bob"}, reviewed=True),
        e("pol", 20, "iam.policy.attached", assurance="mfa", person={"id": "frida"}, reviewed=False),
        e("adhoc", 30, "config.changed", assurance="claimed", actor="root", reviewed=False),
        e("read", 5, "aws.s3.get_object.read", reviewed=False),
    ]
    r = build_accountability(rows, since=AT - timedelta(days=7), until=AT)
    assert r["summary"]["changes"] == 3 and r["summary"]["reviewed_events"] == ["cfg"]
    assert r["summary"]["verified_events"] == ["pol"]
    assert [u["id"] for u in r["unowned"]] == ["adhoc"]
    assert [a["id"] for a in r["access"]] == ["pol"]
    assert {g["kind"]: g["events"] for g in r["by_kind"]} == {"config": ["adhoc", "cfg"], "access": ["pol"]}
    assert {g["person"] for g in r["by_person"]} == {"bob", "frida", "(no person) root"}
    page = accountability_html(r)
    assert "adhoc" in page and "1/3 (33 %)" in page
