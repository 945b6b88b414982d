"""``who PERSON --since``: sessions of other systems the person opened are looked for from
SESSION_LOOKBACK before ``since`` on, and others' events in them are found in one pass."""

from __future__ import annotations

from datetime import timedelta

from incident_data import AT, env, write

from pipeline.identity import IdentityConfig, IdentityMap
from pipeline.store import Store, queries

APP = {"kind": "okta.app", "id": "0oa1payments"}
FRIDA_OKTA = IdentityMap.build(IdentityConfig.from_obj({"people": {"frida": {"principals": ["okta:frida@acme.io"]}}}))


def test_a_session_opened_before_since_counts_within_the_lookback(store: Store) -> None:
    # frida opens an Okta session 20 h before the window; an admin console acts in it inside.
    hours = 60 * 20
    write(store, [
        env(1, hours + 30, "iam.login", APP, actor="okta:frida@acme.io", assurance="mfa", action="user.session.start",
            links=("session:okta:102xyz",)),
        env(2, 20, "access.app.user_assigned", APP, actor="okta-admin-console", action="assign",
            links=("session:okta:102xyz",)),
        env(3, 10, "access.app.user_assigned", APP, actor="okta-admin-console", action="assign",
            links=("session:okta:999other",)),
    ])
    since = AT - timedelta(hours=1)
    assert since - queries.SESSION_LOOKBACK < AT - timedelta(minutes=hours + 30) < since  # before, within reach
    result = queries.who(store, "frida", since=since, identities=FRIDA_OKTA)
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    assert [(r["id"], r["via"].split(" (")[0]) for r in rows] == [("ev-0002", "frida")]


def test_the_persons_own_events_in_their_session_are_listed_once_without_via(store: Store) -> None:
    write(store, [
        env(1, 30, "iam.login", APP, actor="okta:frida@acme.io", assurance="mfa", action="user.session.start",
            links=("session:okta:102xyz",)),
        env(2, 25, "access.app.user_assigned", APP, actor="okta:frida@acme.io", action="assign",
            links=("session:okta:102xyz",)),
        env(3, 20, "access.app.user_assigned", APP, actor="okta-admin-console", action="assign",
            links=("session:okta:102xyz",)),
    ])
    result = queries.who(store, "frida", since=AT - timedelta(hours=1), identities=FRIDA_OKTA)
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.rows]
    assert [(r["id"], bool(r["via"])) for r in rows] == [("ev-0001", False), ("ev-0002", False), ("ev-0003", True)]
