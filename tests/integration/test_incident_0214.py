"""The 02:14 incident, end to end: real sources -> real Kafka -> worker -> chDB -> `causelog why`.

The story (times on the scenario's clock, see "Time" below)::

    D-2  22:00  carol commits db-config/db.yaml (max_connections: 200)       git (infra repo)
    D    00:40  alice commits "bulk export" on branch feature/bulk-export    git (api repo)
         00:45  alice opens acme/api#7                                        GitHub webhook
         01:05  carol approves it                                             GitHub webhook
         01:10  bob merges it (merge commit M; GitHub says merged at 01:10:05) git + GitHub webhook
         01:18  CI (check run, workflow run) succeeds on M                    GitHub webhooks
         01:25  bob creates deployment 8120347 of M to production             GitHub webhook
         01:31  the deployment succeeds                                       GitHub webhook
         01:33  bob's rollout patches Deployment prod/api to image api:M      Kubernetes audit
         01:36  carol patches ConfigMap prod/api-config (DB_POOL_SIZE 20->80) Kubernetes audit
         01:42  bob commits db.yaml max_connections 200 -> 50                 git + config dir
         02:03  alice (IAM user, MFA) assumes role db-reporting,
                sourceIdentity alice                                          CloudTrail
         02:04  the role session reads secret prod/db/reporting               CloudTrail
        ~02:05  alice logs into PostgreSQL `db` and runs a heavy aggregate    real PostgreSQL + pgaudit
         02:14  the database fails
                -> causelog why db --at <D>T02:14 --window 6h

Every input is made by the real thing or built from real samples: two git repositories made
here (ingested with ``causelog ingest git``), octokit's recorded GitHub webhook payloads
(``shared/data/git/octokit-webhooks``) re-addressed to ``acme/api`` with the commit shas of the
git repository and posted, HMAC-signed, to ``causelog ingest github-webhook --listen``; a config
directory edited and scanned by ``causelog ingest config`` (attributed through git to bob); the
Falco project's Kubernetes audit records (``config/falco-k8s-audit``) turned into a Deployment
patch and a ConfigMap patch for ``causelog ingest k8s-audit``; Stratus Red Team's CloudTrail
records (``iam/stratus-red-team-detonation-logs``) turned into alice's AssumeRole and the role
session's GetSecretValue for ``causelog ingest cloudtrail``; and a real PostgreSQL 15 session
with pgaudit whose csvlog is read by ``causelog ingest postgres-log --server db``.

Links that make the chains (checked against what each normaliser emits):
``commit:M`` joins git.merge, change.merged (merge_commit_sha), the CI runs (head_sha), the
deployment and its status (deployment.sha) and the Kubernetes rollout (image tag);
``commit:F`` joins alice's git.commit, the merge (second parent), the PR (head sha) and the
review (commit_id); ``change:acme/api#7`` joins PR opened/reviewed/merged; ``deploy:8120347``
the deployment and its status; ``commit:<infra sha>`` joins the config change and bob's infra
commit; ``session:aws:ASIA...`` the AssumeRole and the call made with its credentials;
``session:postgres:db:<id>`` alice's DB session start, query and end.

Time
----
PostgreSQL stamps its log with the real clock, and nothing here fakes that clock (no
libfaketime; rewriting the log would no longer be a real session). So the incident instant is
placed right after the real session: T = the next whole minute after the session + 8 minutes
(so the session sits at about 02:05-02:06), and the *scenario clock* is UTC shifted by the
whole-minute offset that makes T read 02:14 (an offset within -12h..+12h; the scenario day D
is T's date on that clock). Every other source gets times on that clock, converted to UTC
(git dates, payload timestamps, file mtimes, audit timestamps), and the question is asked as
``causelog why db --at <D>T02:14:00<offset> --window 6h`` -- an ordinary RFC 3339 time that
literally says 02:14. Everything then lies in the 6 hours before T; only T itself is a few
minutes in the future of the wall clock, which `why` does not mind (it only bounds by T).

PostgreSQL: a throwaway cluster (tests/integration/pg_fixture.py, pgaudit on). The admin setup
(role alice, table orders, grant) is logged to the first csvlog file; one ``pg_rotate_logfile()``
starts the night's file, in which alice's session runs the heavy aggregate (with parallel
workers); the server is stopped and that file is ingested. Without PostgreSQL the module skips
with the reason (in CI, ``CI=true``, it fails), like the other real-PostgreSQL tests.

Identities: ``incident_0214/identities.yaml`` (``CAUSELOG_IDENTITIES``) maps alice's, bob's and
carol's git e-mail, GitHub login, AWS principals, PostgreSQL role and Kubernetes user to one
person each. :func:`test_why_names_the_person_behind_each_step` checks the ``person`` key that
identity support adds to every event of the ``why`` output.

:func:`test_why_shows_the_config_diff_and_the_query_text` checks that the ``why`` answer carries
the config diff and the normalised statement, and
:func:`test_parallel_worker_records_belong_to_the_leaders_session` that pgaudit's repeat of the
query from a parallel worker does not become a second query by nobody in a session of its own.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_stack import Stack, free_port
from pg_fixture import PgCluster, missing

pytestmark: list[pytest.MarkDecorator] = [pytest.mark.integration]

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "incident_0214"
DATA = HERE.parents[1].parent / "shared" / "data"
OCTOKIT = DATA / "git" / "octokit-webhooks"
FALCO = DATA / "config" / "falco-k8s-audit"
STRATUS = DATA / "iam" / "stratus-red-team-detonation-logs"

_PG_WHY_NOT = missing()
_IN_CI = os.environ.get("CI") == "true"
if _PG_WHY_NOT is not None and not _IN_CI:
    pytestmark.append(pytest.mark.skip(reason=f"the 02:14 scenario needs a real PostgreSQL: {_PG_WHY_NOT}"))

SECRET = "incident-0214-webhook-secret"
REPO = "acme/api"
PR = 7
DEPLOY_ID = 8120347
ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/db-reporting"
SECRET_ARN = f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:prod/db/reporting-7Fq2Lm"
ROLE_KEY = "ASIARZ4SCENARIO0214A"
PG_SERVER = "db"
ALICE_PG_PASSWORD = "Alice-Pg-Pw-0214"  # checked by the server (SCRAM): her session is authenticated
HEAVY_QUERY = ("SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders "
               "CROSS JOIN generate_series(1, 25) AS copies GROUP BY customer_id ORDER BY total DESC LIMIT 10;")
PEOPLE = {
    "alice": ("Alice Ng", "alice@acme.example"),
    "bob": ("Bob Okafor", "bob@acme.example"),
    "carol": ("Carol Reyes", "carol@acme.example"),
}


# --------------------------------------------------------------------------------------------
# the scenario clock


@dataclass
class Clock:
    """The scenario's local clock: ``T`` (UTC) reads 02:14 on day ``day``."""

    incident: datetime  # UTC
    offset: timedelta

    @classmethod
    def around(cls, session_end: datetime) -> Clock:
        t = session_end.replace(second=0, microsecond=0) + timedelta(minutes=9)
        local_minutes = 2 * 60 + 14
        delta = (local_minutes - (t.hour * 60 + t.minute)) % (24 * 60)
        if delta > 12 * 60:
            delta -= 24 * 60
        return cls(t, timedelta(minutes=delta))

    @property
    def tz(self) -> timezone:
        return timezone(self.offset)

    @property
    def day(self) -> datetime:
        return self.incident.astimezone(self.tz).replace(hour=0, minute=0, second=0, microsecond=0)

    def at(self, hh: int, mm: int, ss: int = 0, *, days: int = 0) -> datetime:
        """UTC instant of ``hh:mm:ss`` on the scenario day (+ ``days``)."""
        return (self.day + timedelta(days=days, hours=hh, minutes=mm, seconds=ss)).astimezone(UTC)

    def at_text(self) -> str:
        return self.incident.astimezone(self.tz).isoformat()


def _z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# git


def _git(repo: Path, *args: str, who: str | None = None, date: datetime | None = None) -> str:
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_SYSTEM="/dev/null")
    if who:
        name, email = PEOPLE[who]
        env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=name,
                   GIT_COMMITTER_EMAIL=email)
    if date:
        env.update(GIT_AUTHOR_DATE=_z(date), GIT_COMMITTER_DATE=_z(date))
    out = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def _commit(repo: Path, rel: str, content: str, message: str, who: str, date: datetime) -> str:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    _git(repo, "add", rel)
    _git(repo, "commit", "-q", "-m", message, who=who, date=date)
    return _git(repo, "rev-parse", "HEAD")


# --------------------------------------------------------------------------------------------
# GitHub webhook payloads from octokit's recorded examples


def _octokit(rel: str) -> dict[str, Any]:
    text = (OCTOKIT / rel).read_text()
    text = text.replace("Codertocat/Hello-World", REPO).replace("Hello-World", "api")
    payload = orjson.loads(text)
    payload["repository"]["owner"]["login"] = "acme"
    return payload


def _user(template: dict[str, Any], login: str, bot: bool = False) -> dict[str, Any]:
    user = copy.deepcopy(template)
    user.update(login=login, type="Bot" if bot else "User", id=zlib.crc32(login.encode()) % 10**8,
                html_url=f"https://github.com/{login}")
    return user


def _github_deliveries(clock: Clock, feature: str, merge: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    tpl = _octokit("pull_request/opened.payload.json")["sender"]
    alice, bob, carol = (_user(tpl, x) for x in ("alice", "bob", "carol"))
    bot = _user(tpl, "github-actions[bot]", bot=True)

    def pr_fields(pr: dict[str, Any], updated: datetime) -> None:
        pr.update(number=PR, title="Bulk export endpoint", user=alice, created_at=_z(clock.at(0, 45)),
                  updated_at=_z(updated), url=f"https://api.github.com/repos/{REPO}/pulls/{PR}",
                  html_url=f"https://github.com/{REPO}/pull/{PR}")
        pr["head"].update(ref="feature/bulk-export", sha=feature, label="acme:feature/bulk-export")
        pr["base"].update(ref="main", label="acme:main")

    opened = _octokit("pull_request/opened.payload.json")
    opened["number"] = PR
    pr_fields(opened["pull_request"], clock.at(0, 45))
    opened["sender"] = alice
    out.append(("pull_request", opened))

    review = _octokit("pull_request_review/submitted.payload.json")
    pr_fields(review["pull_request"], clock.at(1, 5))
    review["review"].update(state="approved", commit_id=feature, submitted_at=_z(clock.at(1, 5)), user=carol,
                            body="LGTM")
    review["sender"] = carol
    out.append(("pull_request_review", review))

    closed = _octokit("pull_request/closed.payload.json")
    closed["number"] = PR
    pr = closed["pull_request"]
    pr_fields(pr, clock.at(1, 10, 5))
    pr.update(state="closed", merged=True, merged_at=_z(clock.at(1, 10, 5)), closed_at=_z(clock.at(1, 10, 5)),
              merge_commit_sha=merge, merged_by=bob)
    closed["sender"] = bob
    out.append(("pull_request", closed))

    check = _octokit("check_run/completed.payload.json")
    run = check["check_run"]
    run.update(head_sha=merge, status="completed", conclusion="success", name="test",
               started_at=_z(clock.at(1, 14)), completed_at=_z(clock.at(1, 18)), pull_requests=[])
    run["check_suite"].update(head_sha=merge, head_branch="main", status="completed", conclusion="success",
                              pull_requests=[], updated_at=_z(clock.at(1, 18)))
    check["sender"] = bot
    out.append(("check_run", check))

    wf = _octokit("workflow_run/completed.payload.json")
    wrun = wf["workflow_run"]
    wrun.update(head_sha=merge, head_branch="main", status="completed", conclusion="success", event="push",
                pull_requests=[], created_at=_z(clock.at(1, 13)), run_started_at=_z(clock.at(1, 13)),
                updated_at=_z(clock.at(1, 19)))
    wf["sender"] = bot
    out.append(("workflow_run", wf))

    dep = _octokit("deployment/payload.json")
    d = dep["deployment"]
    d.update(id=DEPLOY_ID, sha=merge, ref="main", environment="production", original_environment="production",
             creator=bob, created_at=_z(clock.at(1, 25)), updated_at=_z(clock.at(1, 25)),
             url=f"https://api.github.com/repos/{REPO}/deployments/{DEPLOY_ID}")
    dep["sender"] = bob
    out.append(("deployment", dep))

    status = _octokit("deployment_status/payload.json")
    status["deployment"] = copy.deepcopy(d)
    status["deployment"]["updated_at"] = _z(clock.at(1, 31))
    status["deployment_status"].update(state="success", environment="production", creator=bob,
                                       created_at=_z(clock.at(1, 31)), updated_at=_z(clock.at(1, 31)))
    status["sender"] = bob
    out.append(("deployment_status", status))
    return out


class Receiver:
    """``causelog ingest github-webhook --listen`` on a free port."""

    def __init__(self, stack: Stack) -> None:
        self.port = free_port()
        self.log_path = stack.home / "github-webhook.log"
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "ingest", "github-webhook", "--listen",
             f"127.0.0.1:{self.port}", "--secret-env", "HOOK_SECRET"],
            env=dict(stack.env, HOOK_SECRET=SECRET), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"receiver exited:\n{self.tail()}"
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"receiver not healthy:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, orjson.loads(data) if data else {}
        finally:
            conn.close()

    def deliver(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps(payload)
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        status, answer = self.request("POST", "/", body, {
            "Content-Type": "application/json", "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig})
        assert status == 200, (event, status, answer, self.tail())
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------------------------
# Kubernetes audit records from Falco's captured ones


def _k8s_records(clock: Clock, merge: str) -> list[dict[str, Any]]:
    base = orjson.loads((FALCO / "create_deployment.json").read_bytes())
    out = []
    for t, who, resource, name, patch, uri in [
        (clock.at(1, 33, 2), "bob@acme.example", "deployments", "api",
         {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": f"ghcr.io/acme/api:{merge}"}]}}}},
         "/apis/apps/v1/namespaces/prod/deployments/api"),
        (clock.at(1, 36, 40), "carol@acme.example", "configmaps", "api-config",
         {"data": {"DB_POOL_SIZE": "80"}}, "/api/v1/namespaces/prod/configmaps/api-config"),
    ]:
        rec = copy.deepcopy(base)
        stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rec.update(
            apiVersion="audit.k8s.io/v1", auditID=str(uuid.uuid4()), verb="patch", requestURI=uri,
            requestObject=patch, requestReceivedTimestamp=stamp, stageTimestamp=stamp, timestamp=_z(t),
            user={"username": who, "groups": ["system:authenticated", "acme:sre"]},
            userAgent="kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46", sourceIPs=["10.20.0.14"],
            responseStatus={"metadata": {}, "code": 200},
            objectRef={"resource": resource, "namespace": "prod", "name": name,
                       "apiGroup": "apps" if resource == "deployments" else "",
                       "apiVersion": "v1"},
            metadata={"creationTimestamp": _z(t)},
        )
        out.append(rec)
    return out


# --------------------------------------------------------------------------------------------
# CloudTrail records from Stratus Red Team's detonation logs


def _records(name: str) -> list[dict[str, Any]]:
    doc = orjson.loads((STRATUS / name).read_bytes())
    return doc["Records"] if isinstance(doc, dict) else doc


def _cloudtrail(clock: Clock) -> dict[str, Any]:
    assume = copy.deepcopy(next(r for r in _records("aws.credential-access.ec2-get-password-data.json")
                                if r["eventName"] == "AssumeRole"))
    read = copy.deepcopy(next(r for r in _records("aws.credential-access.secretsmanager-retrieve-secrets.json")
                              if r["eventName"] == "GetSecretValue"))
    session_arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/db-reporting/alice"
    assumed_at = clock.at(2, 3, 11)
    assume.update(
        eventID=str(uuid.uuid4()), requestID=str(uuid.uuid4()), eventTime=_z(assumed_at), awsRegion="eu-west-1",
        recipientAccountId=ACCOUNT, sourceIPAddress="198.51.100.24", userAgent="aws-cli/2.17.20",
        userIdentity={"type": "IAMUser", "principalId": "AIDASCENARIOALICE01", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
                      "accountId": ACCOUNT, "accessKeyId": "AKIASCENARIOALICE001", "userName": "alice",
                      "sessionContext": {"attributes": {"creationDate": _z(assumed_at - timedelta(minutes=2)),
                                                        "mfaAuthenticated": "true"}}},
        requestParameters={"roleArn": ROLE_ARN, "roleSessionName": "alice", "sourceIdentity": "alice",
                           "durationSeconds": 3600},
        resources=[{"ARN": ROLE_ARN, "accountId": ACCOUNT, "type": "AWS::IAM::Role"}],
    )
    assume["responseElements"]["assumedRoleUser"] = {"arn": session_arn,
                                                     "assumedRoleId": "AROASCENARIOREPORT01:alice"}
    assume["responseElements"]["credentials"].update(
        accessKeyId=ROLE_KEY, expiration=(assumed_at + timedelta(hours=1)).strftime("%b %d, %Y, %I:%M:%S %p"))
    assume["responseElements"]["sourceIdentity"] = "alice"
    read.update(
        eventID=str(uuid.uuid4()), requestID=str(uuid.uuid4()), eventTime=_z(clock.at(2, 4, 2)),
        awsRegion="eu-west-1", recipientAccountId=ACCOUNT, sourceIPAddress="198.51.100.24",
        userAgent="aws-cli/2.17.20", requestParameters={"secretId": SECRET_ARN},
        userIdentity={"type": "AssumedRole", "principalId": "AROASCENARIOREPORT01:alice", "arn": session_arn,
                      "accountId": ACCOUNT, "accessKeyId": ROLE_KEY,
                      "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": "AROASCENARIOREPORT01",
                                                           "arn": ROLE_ARN, "accountId": ACCOUNT,
                                                           "userName": "db-reporting"},
                                         "attributes": {"creationDate": _z(assumed_at), "mfaAuthenticated": "false"},
                                         "sourceIdentity": "alice"}},
    )
    read["tlsDetails"]["clientProvidedHostHeader"] = "secretsmanager.eu-west-1.amazonaws.com"
    return {"Records": [assume, read]}


# --------------------------------------------------------------------------------------------
# PostgreSQL


def _switch_log(cluster: PgCluster) -> Path:
    """Start a new csvlog file with one ``pg_rotate_logfile()`` and no other session (the
    fixture's :meth:`PgCluster.rotate` polls with extra sessions, which would all land in the
    night's log). File names carry the second: rotate only once the second has changed."""
    before = set(cluster.log_dir.glob("*.csv"))
    assert before, f"no csvlog in {cluster.log_dir}"
    second = int(time.time())
    while int(time.time()) == second:
        time.sleep(0.02)
    cluster.psql("SELECT pg_rotate_logfile();\n")
    deadline = time.monotonic() + 15
    while not (new := set(cluster.log_dir.glob("*.csv")) - before):
        assert time.monotonic() < deadline, "the server did not switch to a new log file"
        time.sleep(0.05)
    (night,) = new
    return night


def _pg_session(tmp: Path) -> tuple[Path, datetime]:
    """Run the admin setup and alice's heavy query; return the csvlog of the night and when
    alice's session ended."""
    cluster = PgCluster(free_port())
    try:
        cluster.start()
        cluster.psql(
            f"CREATE ROLE alice LOGIN PASSWORD '{ALICE_PG_PASSWORD}';\n"
            "CREATE TABLE orders AS SELECT g AS id, g % 5000 AS customer_id, (g % 97)::numeric AS amount "
            "FROM generate_series(1, 200000) AS g;\n"
            "GRANT SELECT ON orders TO alice;\n")
        cluster.require_password("alice")  # her role is authenticated, not merely claimed
        # The setup stays in the first file: the database existed before the night.
        night = _switch_log(cluster)
        out = cluster.psql(HEAVY_QUERY + "\n", user="alice", app="psql-reporting", password=ALICE_PG_PASSWORD)
        assert len(out.strip().splitlines()) == 10
        ended = datetime.now(UTC)
        deadline = time.monotonic() + 15
        while not any('"alice"' in line and "disconnection: session time" in line
                      for line in night.read_text(errors="replace").splitlines()):
            assert time.monotonic() < deadline, f"alice's disconnection never reached {night}"
            time.sleep(0.05)
        stopped = cluster.pg_sh("stop")  # the server closes its log; no record is cut off
        assert stopped.returncode == 0, stopped.stderr
        kept = tmp / "postgresql-db.csv"
        shutil.copyfile(night, kept)
        return kept, ended
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------
# the scenario, built once


@dataclass
class Scenario:
    stack: Stack
    clock: Clock
    shas: dict[str, str]
    expected: int
    reports: dict[str, str] = field(default_factory=dict)

    def why(self, target: str = "db") -> dict[str, Any]:
        done = self.stack.cli("why", target, "--at", self.clock.at_text(), "--window", "6h", "--json", check=True)
        return _json(done.stdout)


def _json(stdout: str) -> Any:
    return orjson.loads(stdout)


_COUNT = re.compile(r"([\d,]+) records? -> ([\d,]+) events?")


def _events_sent(done: subprocess.CompletedProcess[str], what: str) -> int:
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    found = _COUNT.findall(done.stderr)
    assert found, f"{what}: no summary in\n{done.stderr}"
    return int(found[-1][1].replace(",", ""))


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    if _PG_WHY_NOT is not None:
        pytest.fail(f"CI=true but {_PG_WHY_NOT}")
    for need in (OCTOKIT, FALCO, STRATUS):
        if not need.is_dir():
            pytest.skip(f"real sample data not found at {need}")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    tmp = tmp_path_factory.mktemp("incident-0214")

    # 1. The real DB session first: its time fixes the scenario clock.
    csv_log, session_end = _pg_session(tmp)
    clock = Clock.around(session_end)

    home = tmp / "home"
    home.mkdir()
    stack = Stack(kafka_bootstrap, home, CAUSELOG_TOPOLOGY=str(FIXTURE / "topology.yaml"),
                  CAUSELOG_IDENTITIES=str(FIXTURE / "identities.yaml"))
    stack.ensure_topics()
    pool = ThreadPoolExecutor(6)
    try:
        worker = pool.submit(stack.start_worker)

        # 2. The api repository: alice's commit on a branch, merged by bob.
        api = tmp / "api"
        api.mkdir()
        _git(api, "init", "-q", "-b", "main")
        shas = {"init": _commit(api, "app/main.py", "print('api')\n", "api skeleton", "alice",
                                clock.at(9, 0, days=-2))}
        _git(api, "checkout", "-q", "-b", "feature/bulk-export")
        shas["feature"] = _commit(api, "app/export.py", "def export(rows):\n    return list(rows)\n",
                                  "bulk export endpoint", "alice", clock.at(0, 40))
        _git(api, "checkout", "-q", "main")
        _git(api, "merge", "-q", "--no-ff", "feature/bulk-export", "-m", f"Merge pull request #{PR} from "
             "acme/feature/bulk-export", who="bob", date=clock.at(1, 10))
        shas["merge"] = _git(api, "rev-parse", "HEAD")

        # 3. The infra repository holding the DB config directory; carol wrote it two days ago.
        infra = tmp / "infra"
        infra.mkdir()
        _git(infra, "init", "-q", "-b", "main")
        conf = infra / "db-config"
        original = (FIXTURE / "db.yaml").read_text()
        shas["config_init"] = _commit(infra, "db-config/db.yaml", original, "db settings", "carol",
                                      clock.at(22, 0, days=-2))
        os.utime(conf / "db.yaml", (clock.at(22, 0, days=-2).timestamp(),) * 2)
        backfill = stack.cli("ingest", "config", str(conf))
        expected = _events_sent(backfill, "ingest config (backfill)")

        # bob lowers the connection limit at 01:42, commits it, the watcher sees the edit.
        edited = original.replace("max_connections: 200", "max_connections: 50")
        assert edited != original
        shas["config"] = _commit(infra, "db-config/db.yaml", edited, "db: lower max_connections to 50", "bob",
                                 clock.at(1, 42))
        os.utime(conf / "db.yaml", (clock.at(1, 42).timestamp(),) * 2)

        # 4. Files for the file-based sources.
        audit = tmp / "k8s-audit.log"
        audit.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _k8s_records(clock, shas["merge"])))
        trail = tmp / "cloudtrail" / "AWSLogs" / ACCOUNT
        trail.mkdir(parents=True)
        (trail / "eu-west-1_CloudTrail_0214.json").write_bytes(orjson.dumps(_cloudtrail(clock)))

        jobs = {
            "ingest config": pool.submit(stack.cli, "ingest", "config", str(conf)),
            "ingest git api": pool.submit(stack.cli, "ingest", "git", str(api)),
            "ingest git infra": pool.submit(stack.cli, "ingest", "git", str(infra)),
            "ingest k8s-audit": pool.submit(stack.cli, "ingest", "k8s-audit", "--file", str(audit),
                                            "--cluster", "prod"),
            "ingest cloudtrail": pool.submit(stack.cli, "ingest", "cloudtrail", str(tmp / "cloudtrail")),
            "ingest postgres-log": pool.submit(stack.cli, "ingest", "postgres-log", str(csv_log), "--server",
                                               PG_SERVER),
        }

        # 5. GitHub deliveries, signed, in the order GitHub sends them.
        receiver = Receiver(stack)
        try:
            for event, payload in _github_deliveries(clock, shas["feature"], shas["merge"]):
                expected += receiver.deliver(event, payload)["events"]
        finally:
            receiver.stop()

        reports = {}
        for what, job in jobs.items():
            done = job.result()
            expected += _events_sent(done, what)
            reports[what] = done.stderr
        worker.result()
        stack.wait_rows(expected, timeout=60)
        yield Scenario(stack, clock, shas, expected, reports)
    finally:
        pool.shutdown(wait=True)
        stack.stop_workers(signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# helpers over the `why` answer


def _cause(why: dict[str, Any], type_: str, target: str | None = None, actor: str | None = None) -> dict[str, Any]:
    found = [c for c in why["causes"] if c["event"]["type"] == type_
             and (target is None or c["event"]["target_id"] == target)
             and (actor is None or c["event"]["actor_id"] == actor)]
    assert found, f"no {type_} {target or ''} among {[(c['event']['type'], c['event']['target_id']) for c in why['causes']]}"
    return found[0]


def _envelope(stack: Stack, event_id: str) -> dict[str, Any]:
    rows = stack.sql(f"SELECT envelope FROM DB.events WHERE id = '{event_id}'")
    assert rows, event_id
    return orjson.loads(rows[0][0])


# --------------------------------------------------------------------------------------------
# tests


def test_why_db_at_0214_returns_config_change_deploy_and_session(scenario: Scenario) -> None:
    s = scenario
    stored = s.stack.sql("SELECT count() FROM DB.events")[0][0]
    assert stored == s.expected
    assert s.stack.stats()["worker"]["rejected"] == 0
    assert "T02:14:00" in s.clock.at_text()

    why = s.why()
    assert set(why["related"]) >= {"db", "acme/api", "prod/api", "db-config/db.yaml", SECRET_ARN}
    assert "prod/api-config" not in why["related"]  # only db's direct dependents are looked at
    ranked = [(c["event"]["type"], c["event"]["target_id"]) for c in why["causes"]]
    times = [datetime.fromisoformat(str(c["event"]["time"]).replace("Z", "+00:00")) for c in why["causes"]]
    lo = s.clock.incident - timedelta(hours=6)
    assert all(lo <= (t if t.tzinfo else t.replace(tzinfo=UTC)) <= s.clock.incident for t in times), times

    # The config change: bob's edit of db.yaml, attributed through git, first in the ranking.
    config = _cause(why, "config.changed", "db-config/db.yaml")
    assert ranked[0] == ("config.changed", "db-config/db.yaml"), ranked
    ev = config["event"]
    assert ev["action"] == "update"
    assert (ev["actor_id"], ev["actor_assurance"]) == ("git:bob@acme.example", "claimed")
    assert f"commit:{s.shas['config']}" in ev["links"]
    assert {e["type"] for e in config["chain"]} >= {"config.changed", "git.commit"}
    assert "git:bob@acme.example (claimed)" in config["story"]["actors"]
    env = _envelope(s.stack, ev["id"])
    assert env["diff"]["changed"] == ["max_connections"]
    assert env["diff"]["before"] == {"max_connections": 200} and env["diff"]["after"] == {"max_connections": 50}
    assert env["raw"]["attribution"]  # why it is bob: git, tracked and clean

    # The deploys: the GitHub deployment and the Kubernetes rollout, both with M's full chain.
    assert ranked.index(("config.changed", "db-config/db.yaml")) < ranked.index(("deploy.created", REPO))
    for type_, target in (("deploy.created", REPO), ("deploy.succeeded", REPO), ("deploy.updated", "prod/api")):
        deploy = _cause(why, type_, target)
        kinds = {e["type"] for e in deploy["chain"]}
        assert kinds >= {"git.commit", "git.merge", "change.opened", "change.reviewed", "change.merged",
                         "ci.check.succeeded", "ci.run.succeeded", "deploy.created", "deploy.succeeded",
                         "deploy.updated"}, (type_, kinds)
        story = deploy["story"]
        assert story["reviewers"] == ["github:carol (authenticated)"]
        assert story["changes"] == [f"{REPO}#{PR}"]
        assert set(story["commits"]) >= {s.shas["feature"], s.shas["merge"]}
        assert s.shas["init"] not in story["commits"]
        assert set(story["ci"]) == {"ci.check.succeeded success", "ci.run.succeeded success"}
        assert "github:bob (authenticated)" in story["deployers"]
        assert {"git:alice@acme.example (claimed)", "github:alice (authenticated)", "github:bob (authenticated)",
                "k8s:bob@acme.example (authenticated)"} <= set(story["actors"])
        review = next(e for e in deploy["chain"] if e["type"] == "change.reviewed")
        assert (review["action"], review["actor_id"]) == ("approved", "github:carol")
        commit = next(e for e in deploy["chain"] if e["type"] == "git.commit")
        assert commit["actor_id"] == "git:alice@acme.example"
        assert all(e["type"] != "config.changed" for e in deploy["chain"])
    rollout = _cause(why, "deploy.updated", "prod/api")["event"]
    assert (rollout["actor_id"], rollout["action"]) == ("k8s:bob@acme.example", "patch")
    assert f"commit:{s.shas['merge']}" in rollout["links"]

    # The DB session: alice's real session and her heavy query, normalised.
    query = _cause(why, "db.query", actor=f"postgres:{PG_SERVER}:alice")
    q = query["event"]
    assert q["actor_id"] == f"postgres:{PG_SERVER}:alice" and q["actor_assurance"] == "authenticated"
    session = next(k for k in q["links"] if k.startswith(f"session:postgres:{PG_SERVER}:"))
    assert {e["type"] for e in query["chain"]} >= {"db.session.started", "db.query", "db.session.ended"}
    assert query["story"]["sessions"] == [session.partition(":")[2]]
    assert f"postgres:{PG_SERVER}:alice (authenticated)" in query["story"]["actors"]
    statement = _envelope(s.stack, q["id"])["raw"]["statement"]
    from pipeline.sources.pgsql import normalize

    assert statement["normalized"].rstrip(";") == normalize(HEAVY_QUERY).rstrip(";")
    assert statement["normalized"].startswith("SELECT customer_id, count(*)")
    assert "generate_series(?, ?)" in statement["normalized"] and "25" not in statement["normalized"]
    assert re.fullmatch(r"hmac-sha256:v1:[0-9a-f]{32}", statement["hash"]), statement
    assert any(c["event"]["type"] == "db.session.started" and c["event"]["actor_id"] == q["actor_id"]
               for c in why["causes"])

    # The role session behind the DB credentials: alice, with MFA, assumed db-reporting.
    secret = _cause(why, "aws.secretsmanager.get_secret_value.read", SECRET_ARN)
    assert secret["event"]["actor_id"] == "aws:source-identity:alice"
    assume = [e for e in secret["chain"] if e["type"] == "iam.role.assumed"]
    assert len(assume) == 1 and assume[0]["actor_id"] == f"arn:aws:iam::{ACCOUNT}:user/alice"
    assert assume[0]["actor_assurance"] == "mfa"
    assert f"arn:aws:iam::{ACCOUNT}:user/alice (mfa)" in secret["story"]["actors"]
    assert secret["story"]["sessions"] == [f"aws:{ROLE_KEY}"]

    # The same answer for a person at a terminal.
    text = s.stack.cli("why", "db", "--at", s.clock.at_text(), check=True).stdout
    assert "config.changed" in text and "reviewers: github:carol (authenticated)" in text
    assert "deploy.created" in text and "db.query" in text

    # Nothing after 02:14, nothing outside the 6 hours, and the configmap is not db's business.
    assert ("config.changed", "prod/api-config") not in ranked
    assert all(c["event"]["type"] != "git.commit" for c in why["causes"])


def test_why_prod_api_sees_the_configmap_patch(scenario: Scenario) -> None:
    why = scenario.why("prod/api")
    cm = _cause(why, "config.changed", "prod/api-config")
    assert (cm["event"]["actor_id"], cm["event"]["action"]) == ("k8s:carol@acme.example", "patch")
    assert _envelope(scenario.stack, cm["event"]["id"])["diff"]["after"] == {"data.DB_POOL_SIZE": "80"}


def test_chain_of_the_deploy(scenario: Scenario) -> None:
    s = scenario
    deploy = _cause(s.why(), "deploy.created", REPO)["event"]
    chain = _json(s.stack.cli("chain", deploy["id"], "--json", check=True).stdout)
    by_id = {e["id"]: e for e in chain["events"]}
    types = sorted(e["type"] for e in chain["events"])
    assert types == sorted(["git.commit", "change.opened", "change.reviewed", "git.merge", "change.merged",
                            "ci.check.succeeded", "ci.run.succeeded", "deploy.created", "deploy.succeeded",
                            "deploy.updated"]), types
    first = by_id[chain["chain_id"]]
    assert (first["type"], first["actor_id"]) == ("git.commit", "git:alice@acme.example")
    def on(key: str) -> list[tuple[str, str]]:
        """Edges on one key as (from type, to type), in the time order of their ``from`` event."""
        edges = sorted((x for x in chain["edges"] if x["key"] == key), key=lambda x: (
            str(by_id[x["from"]]["time"]), x["from"]))
        return [(by_id[x["from"]]["type"], by_id[x["to"]]["type"]) for x in edges]

    on_merge = on(f"commit:{s.shas['merge']}")
    assert on_merge == [("change.merged", "git.merge"), ("ci.check.succeeded", "change.merged"),
                        ("ci.run.succeeded", "ci.check.succeeded"), ("deploy.created", "ci.run.succeeded"),
                        ("deploy.succeeded", "deploy.created"), ("deploy.updated", "deploy.succeeded")]
    on_change = on(f"change:{REPO}#{PR}")
    assert on_change == [("change.reviewed", "change.opened"), ("change.merged", "change.reviewed")]
    assert on(f"commit:{s.shas['feature']}") == [
        ("change.opened", "git.commit"), ("change.reviewed", "change.opened"), ("git.merge", "change.reviewed"),
        ("change.merged", "git.merge")]
    assert on(f"deploy:{DEPLOY_ID}") == [("deploy.succeeded", "deploy.created")]
    assert {x["key_type"] for x in chain["edges"]} == {"commit", "change", "deploy"}


def test_why_shows_the_config_diff_and_the_query_text(scenario: Scenario) -> None:
    """What the issue asks `why` itself to show, not only the store: the config change's diff
    and the session's normalised query, in the `why` answer."""
    why = scenario.why()
    config = _cause(why, "config.changed", "db-config/db.yaml")["event"]
    assert config.get("diff", {}).get("after") == {"max_connections": 50}, sorted(config)
    query = _cause(why, "db.query", actor=f"postgres:{PG_SERVER}:alice")["event"]
    text = query.get("statement") or (query.get("raw") or {}).get("statement", {}).get("normalized")
    assert text and text.startswith("SELECT customer_id, count(*)"), sorted(query)


def test_parallel_worker_records_belong_to_the_leaders_session(scenario: Scenario) -> None:
    """The heavy query runs with parallel workers; pgaudit logs it once more from each worker,
    whose csvlog row has no user or database, its own session id, ``backend_type = parallel
    worker`` and ``leader_pid``. Those rows are alice's query in alice's session, not a second
    query by nobody in a session of its own."""
    rows = scenario.stack.sql(
        "SELECT actor_id, links FROM DB.events WHERE type = 'db.query' AND "
        "startsWith(JSONExtractString(envelope, 'raw', 'statement', 'normalized'), 'SELECT customer_id')")
    assert rows
    sessions = {k for _, links in rows for k in links if k.startswith("session:")}
    assert {a for a, _ in rows} == {f"postgres:{PG_SERVER}:alice"}, rows
    assert len(sessions) == 1, rows


def _person(e: dict[str, Any]) -> str | None:
    assert "person" in e, f"no person key on {e['type']} {e['id']}: {sorted(e)}"
    p = e["person"]
    if p is None:
        return None
    assert set(p) >= {"id", "name", "via"}, p
    if p["id"] in PEOPLE:  # a configured person: the name from identities.yaml
        assert p["name"] == PEOPLE[p["id"]][0], p
    return str(p["id"])


def test_why_names_the_person_behind_each_step(scenario: Scenario) -> None:
    why = scenario.why()
    for cause in why["causes"]:
        _person(cause["event"])
        for e in cause["chain"]:
            _person(e)

    config = _cause(why, "config.changed", "db-config/db.yaml")
    assert _person(config["event"]) == "bob"
    assert _person(next(e for e in config["chain"] if e["type"] == "git.commit")) == "bob"

    deploy = _cause(why, "deploy.created", REPO)
    assert _person(deploy["event"]) == "bob"
    people = {e["type"]: _person(e) for e in deploy["chain"]}
    assert people["git.commit"] == "alice"
    assert people["change.opened"] == "alice"
    assert people["change.reviewed"] == "carol"
    assert people["change.merged"] == "bob" and people["git.merge"] == "bob"
    assert people["deploy.updated"] == "bob"
    # The CI bot is none of the three (no person, or an unnamed one of its own).
    assert people["ci.check.succeeded"] not in PEOPLE and people["ci.run.succeeded"] not in PEOPLE

    query = _cause(why, "db.query", actor=f"postgres:{PG_SERVER}:alice")
    assert _person(query["event"]) == "alice"
    assert {_person(e) for e in query["chain"]} == {"alice"}
    secret = _cause(why, "aws.secretsmanager.get_secret_value.read", SECRET_ARN)
    assert _person(secret["event"]) == "alice"
    assert {_person(e) for e in secret["chain"]} == {"alice"}
    # The admin who rotated the log is no one in the identity map (whether the rotation's own
    # statement lands in the new log file depends on timing, so it may not be there at all);
    # an unattributed record, should one appear, names nobody either.
    admin = [c["event"] for c in why["causes"] if c["event"]["actor_id"] == f"postgres:{PG_SERVER}:postgres"]
    assert all(_person(e) not in PEOPLE for e in admin)
    unknown = [c["event"] for c in why["causes"] if c["event"]["actor_id"] == f"postgres:{PG_SERVER}:unknown"]
    assert all(_person(e) is None for e in unknown)



def test_who_a_person_lists_the_events_of_all_their_principals(scenario: Scenario) -> None:
    """``causelog who alice``: git commit, GitHub PR, AWS role and PostgreSQL session, one person."""
    rows = _json(scenario.stack.cli("who", "alice", "--json", check=True).stdout)
    kinds = {r["type"] for r in rows}
    assert "git.commit" in kinds and "change.opened" in kinds
    assert "iam.role.assumed" in kinds and "db.query" in kinds
    actors = {r["actor_id"] for r in rows}
    assert len(actors) >= 3  # several principals of one person
    # Nobody else's events: bob's merge is not alice's.
    assert "change.merged" not in kinds and "config.changed" not in kinds
    # A principal of hers gives the same answer as her person id.
    same = _json(scenario.stack.cli("who", "github:alice", "--json", check=True).stdout)
    assert {r["id"] for r in same} == {r["id"] for r in rows}
