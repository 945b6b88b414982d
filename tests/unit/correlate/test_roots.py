"""Current roots of merged chains (pipeline.correlate.roots): the root of connected chains is
the one whose head is earliest, whatever order the merges are seen in."""

from __future__ import annotations

import itertools

from pipeline.correlate.roots import Link, changed, resolve


def test_a_chain_merged_several_times_points_at_the_last_root() -> None:
    # c30 merges into c20, then c20 into c10: both now belong to c10.
    links = [Link("c30", "c20", 20), Link("c20", "c10", 10)]
    assert resolve(links) == {"c30": ("c10", 10), "c20": ("c10", 10)}


def test_a_late_merge_moves_every_member_to_the_earlier_head() -> None:
    # c10 already holds c20 and c30; a late event c05 (earlier head) takes them all.
    links = [Link("c20", "c10", 10), Link("c30", "c10", 10), Link("c10", "c05", 5)]
    assert resolve(links) == {c: ("c05", 5) for c in ("c10", "c20", "c30")}


def test_the_answer_does_not_depend_on_the_order_merges_arrive_in() -> None:
    links = [Link("c30", "c20", 20), Link("c20", "c10", 10), Link("c10", "c05", 5), Link("c40", "c20", 20),
             Link("x2", "x1", 7)]
    answers = {tuple(sorted(resolve(list(p)).items())) for p in itertools.permutations(links)}
    assert answers == {tuple(sorted({**{c: ("c05", 5) for c in ("c10", "c20", "c30", "c40")},
                                     "x2": ("x1", 7)}.items()))}


def test_equal_head_times_fall_back_to_the_id_and_roots_are_not_listed() -> None:
    got = resolve([Link("b", "a", 5), Link("c", "b", 5)])
    assert got == {"b": ("a", 5), "c": ("a", 5)}
    assert "a" not in got


def test_changed_keeps_only_rows_that_change_an_answer() -> None:
    resolved = {"c20": ("c05", 5), "c30": ("c05", 5)}
    assert changed(resolved, {"c20": ("c05", 5), "c30": ("c10", 10)}) == {"c30": ("c05", 5)}
    assert changed(resolved, {}) == resolved
