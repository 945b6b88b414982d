"""Progress bars of long CLI work (pipeline/cli/progress.py): drawn on a terminal, silent in a
pipe and in --json mode; counting the rules engine's evaluations changes none of its alerts."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from factories import event_dict
from rich.console import Console

from pipeline.cli.progress import CountingEngine, bar
from pipeline.rules.engine import Engine, Item
from pipeline.rules.loader import load
from pipeline.rules.offline import evaluate_items

RULE = """\
title: prod config change by a claimed actor
id: 0b7a51f6-4d44-4b8e-9f42-6f0e4f9d0c41
logsource: {product: causelog}
detection:
    selection: {type: config.changed, target.environment: prod, actor.assurance: {lt: authenticated}}
    condition: selection
"""


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100), buf


def test_bar_draws_on_a_terminal_only() -> None:
    for terminal, quiet, drawn in ((True, False, True), (False, False, False), (True, True, False)):
        c, buf = console(terminal)
        with bar("hunting", quiet=quiet, console=c) as progress:
            task = progress.add_task("hunting", total=5)
            for _ in range(5):
                progress.advance(task)
        assert ("hunting" in buf.getvalue()) is drawn, (terminal, quiet, buf.getvalue())
        assert bar("x", quiet=quiet, console=c).disable is not drawn


def test_counting_engine_changes_no_alert(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(RULE)
    rules = load([tmp_path], builtin=False)
    items = []
    for i in range(30):
        d = event_dict(i)
        if i % 10 == 3:
            d["actor"]["assurance"] = "mfa"
        items.append(Item(event=orjson.loads(orjson.dumps(d)), chain_id=f"c{i}"))
    plain = evaluate_items(Engine(rules), items + items[:5])  # repeated ids are evaluated once
    c, buf = console(True)
    with bar("hunt", console=c) as progress:
        task = progress.add_task("hunt", total=len(items) + 5)
        counted = evaluate_items(CountingEngine(Engine(rules), progress, task), items + items[:5])
        assert progress.tasks[0].completed == 30
    assert [a.id for a in counted] == [a.id for a in plain] and len(plain) == 27
    assert "hunt" in buf.getvalue()
