"""The HTTP receivers keep their own door: their HMAC check and their own listen address.

API tokens neither open nor close them: a signed GitHub delivery needs no bearer token, and a
bearer token (even the admin's) does not replace the signature.
"""

from __future__ import annotations

import uuid

import pytest
from kafka_stack import Stack
from probe_http import request
from test_receivers import OCTOKIT, Server, _sign

pytestmark = pytest.mark.integration


def test_github_receiver_keeps_its_hmac_and_its_own_port(secured: Stack) -> None:
    if not (OCTOKIT / "push" / "payload.json").is_file():
        pytest.skip(f"octokit webhook payloads not found at {OCTOKIT}")
    body = (OCTOKIT / "push" / "payload.json").read_bytes()
    admin = secured.settings.admin_token_path.read_text().strip()
    server = Server(secured, "github-webhook")
    try:
        assert server.port != secured.settings.api_port
        headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4())}
        status, answer = server.request("POST", "/", body, {**headers, "Authorization": f"Bearer {admin}"})
        assert (status, answer["error"]) == (401, "unauthorized")
        status, answer = server.request("POST", "/", body, {**headers, "X-Hub-Signature-256": _sign(body)})
        assert status == 200, answer
    finally:
        server.stop()
    # The receiver's port is not the API: the API still wants its token.
    assert request(secured.settings.api_port, "GET", "/v1/stats?tables=0")[0] == 401
