"""The alert sink's offset bookkeeping: commit the lowest offset whose alert is not finished."""

from __future__ import annotations

from pipeline.rules.notify import NotifyConfig, Receiver
from pipeline.settings import load
from pipeline.stream.alert_sink import Pending, notify_group, sink_groups, store_group


def test_commit_point_is_the_lowest_unfinished_offset_per_partition() -> None:
    p = Pending()
    e = {off: p.add(0, off, unfinished=off != 11) for off in (10, 11, 12, 13)}  # 11: not for this receiver
    p.add(1, 5, unfinished=False)
    assert p.commit_points() == {0: 10, 1: 6} and p.unfinished() == 3
    p.finish(0, 12, e[12])  # out of order: 10 still open
    assert p.commit_points() == {0: 10, 1: 6}
    p.finish(0, 10, e[10])
    assert p.commit_points()[0] == 13 and not p.idle(0)
    p.finish(0, 13, e[13])
    assert p.commit_points() == {0: 14, 1: 6} and p.idle(0) and p.unfinished() == 0


def test_work_of_a_revoked_partition_no_longer_counts() -> None:
    p = Pending()
    old = p.add(0, 7, unfinished=True)
    p.add(1, 3, unfinished=True)
    p.forget([0])
    assert not p.live(0, old) and p.commit_points() == {1: 3}
    p.finish(0, 7, old)  # finished after the revocation: ignored
    new = p.add(0, 7, unfinished=True)  # assigned again, read again
    assert p.live(0, new) and p.commit_points() == {0: 7, 1: 3}
    assert p.commit_points([0]) == {0: 7}


def test_consumer_groups_derive_from_the_rules_group() -> None:
    s = load({"CAUSELOG_GROUP": "g"})
    cfg = NotifyConfig(receivers=(Receiver("ops", "webhook", "http://x"), Receiver("pd", "pagerduty", "http://y")))
    assert sink_groups(s, cfg) == {"store": "g-rules-alerts-store", "notify:ops": "g-rules-notify-ops",
                                   "notify:pd": "g-rules-notify-pd"}
    assert store_group(s, "other") == "other-alerts-store" and notify_group(s, "ops", "other") == "other-notify-ops"


def test_status_line_shows_the_sink_lag() -> None:
    from pipeline.cli.main import _rules_line

    s = load({"CAUSELOG_TOPIC_PREFIX": "p"})
    line = _rules_line(s, {"up": True, "pid": 7, "lag": 0, "sink_lag": {"store": 0, "notify:ops": 3}})
    assert line == "[green]up[/] (pid 7, lag 0 on p.chains, alert sink lag store 0, notify:ops 3 on p.alerts)"
    assert "alert sink" not in _rules_line(s, {"up": True, "pid": 7, "lag": 0})
