"""``causelog keys``, ``verify``, ``evidence`` and ``verify-pack``: tamper evidence from the
command line (README, "Tamper evidence")."""

from __future__ import annotations

import base64
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pipeline.cli import api
from pipeline.cli.progress import bar
from pipeline.cli.timeparse import parse_time
from pipeline.errors import CauselogError, IntegrityError
from pipeline.settings import Settings
from pipeline.stream.jsonio import dumps

_VKEY = click.option("--vkey", "vkey_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="File with a verifier key to trust (repeatable); the local signing key is always trusted.")


def _vkeys(files: tuple[Path, ...]) -> list[str]:
    return [line.strip() for f in files for line in f.read_text().splitlines()[:1] if line.strip()]


@click.group()
def keys() -> None:
    """The checkpoint signing key."""


@keys.command("show")
@click.pass_obj
def keys_show(s: Settings) -> None:
    """Print the verifier key (first line, C2SP note format), then where the key lives."""
    from pipeline.integrity.keyfile import read_key

    signer = read_key(s.signing_key_path)
    click.echo(signer.verifier.vkey)
    click.echo(f"# signing key: {s.signing_key_path} (name {signer.name}, key hash {signer.verifier.hash.hex()})")


@keys.command("generate")
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private key (0600; must not exist).")
def keys_generate(name: str, out: Path) -> None:
    """Create a signing key named NAME in OUT (use it with CAUSELOG_SIGNING_KEY_FILE) and print
    its verifier key."""
    from pipeline.integrity.keyfile import load_or_create

    if out.exists():
        raise CauselogError(f"{out} already exists")
    signer, _ = load_or_create(out, name)
    click.echo(signer.verifier.vkey)


def _local_store(s: Settings) -> Any:
    from pipeline.store import open_store

    return open_store(s, create=False)


def _through_worker(s: Settings) -> bool:
    """Whether to ask the worker: the embedded store is the worker's while it runs; once it is
    down (`causelog down`) the store is opened here."""
    return s.embedded and api.healthy(s) is not None


@click.command()
@click.option("--log", "log", type=int, default=None, help="Only this log (partition of <prefix>.changes).")
@click.option("--since", help="Recompute leaves only for rows stored since then (older rows keep their stored "
                              "leaf hash); same forms as timeline --since.")
@_VKEY
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.pass_obj
def verify(s: Settings, log: int | None, since: str | None, vkey_files: tuple[Path, ...], as_json: bool) -> None:
    """Check that the stored events are exactly what the signed checkpoints cover.

    Recomputes every leaf from the stored envelopes, rebuilds each log's tree, checks every
    checkpoint's signature, its root against the rows, consistency between checkpoints and that
    indexes have no gap or repeat. Prints the first bad row of each log (event id, index, what is
    wrong) and exits 1; exits 0 with a one-line summary when everything verifies.
    """
    from pipeline.integrity.keyfile import trusted

    t_since = parse_time(since, datetime.now(UTC)) if since else None
    vkeys = _vkeys(vkey_files)
    with bar("verify: logs", quiet=as_json) as progress:
        task = progress.add_task("verify", total=None)
        if _through_worker(s):
            report = api.call(s, "/v1/integrity/verify", {"log": log, "since": t_since.isoformat() if t_since else None,
                                                          "vkeys": vkeys}, timeout=3600)
        else:
            from pipeline.store import integrity

            store = _local_store(s)
            try:
                report = integrity.verify(store, s.topic_changes, trusted(s.signing_key_path, vkeys), log=log,
                                          since=t_since, progress=lambda done, total: progress.update(
                                              task, completed=done, total=total)).to_json()
            finally:
                store.close()
    if as_json:
        click.echo(dumps(report))
    else:
        for r in report["logs"]:
            first = r["first_bad"]
            if first is None:
                continue
            where = "" if first["index"] is None else f" at index {first['index']}"
            who = "" if first["event_id"] is None else f" event {first['event_id']}"
            more = len(r["findings"]) - 1
            click.echo(f"log {r['log']}: first bad row{where}{who}: {first['kind']}: {first['detail']}"
                       + (f" (+{more} more findings, see --json)" if more else ""))
        click.echo(report["summary"])
    sys.exit(0 if report["ok"] else 1)


@click.command()
@click.argument("event_ids", nargs=-1, required=True, metavar="EVENT_ID...")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@_VKEY
@click.pass_obj
def evidence(s: Settings, event_ids: tuple[str, ...], out: Path, vkey_files: tuple[Path, ...]) -> None:
    """Write an evidence pack for EVENT_ID... into OUT: the events as stored, their inclusion
    proofs, the signed checkpoint and the verifier key; check it with `causelog verify-pack OUT`
    or any RFC 6962 + C2SP signed-note implementation."""
    make_pack(s, list(event_ids), out, "causelog evidence " + " ".join(shlex.quote(i) for i in event_ids),
              _vkeys(vkey_files))


def make_pack(s: Settings, ids: list[str], out: Path, query: str, vkeys: list[str] | None = None) -> None:
    """Write the evidence pack of ``ids`` into ``out`` (through the worker for the embedded store)."""
    from pipeline.integrity.keyfile import trusted
    from pipeline.integrity.pack import write_pack

    if _through_worker(s):
        answer = api.call(s, "/v1/integrity/evidence", {"ids": ids, "query": query, "vkeys": vkeys or []}, timeout=600)
        files = {k: base64.b64decode(v) for k, v in answer["files"].items()}
    else:
        from pipeline.store import integrity

        store = _local_store(s)
        try:
            files = integrity.evidence(store, s.topic_changes, ids, trusted(s.signing_key_path, vkeys or []), query)
        finally:
            store.close()
    write_pack(out, files)
    click.echo(f"wrote an evidence pack of {len(ids)} event(s) to {out}; check it with: causelog verify-pack {out}",
               err=True)


@click.command("verify-pack")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_VKEY
def verify_pack(directory: Path, vkey_files: tuple[Path, ...]) -> None:
    """Check an evidence pack offline: the checkpoint's signature by the pack's key (which must be
    one of --vkey when given) and every event's inclusion proof. Exit 1 if anything fails."""
    from pipeline.integrity.note import parse_vkey
    from pipeline.integrity.pack import verify_pack as check

    result = check(directory, [parse_vkey(v) for v in _vkeys(vkey_files)])
    for problem in result.problems:
        click.echo(f"FAIL {problem}")
    sizes = ", ".join(f"{cp.origin}@{cp.size}" for cp in result.checkpoints)
    if result.problems:
        click.echo(f"{len(result.problems)} problem(s); {len(result.proven)} event(s) proven")
        sys.exit(1)
    if not result.proven:
        raise IntegrityError(f"{directory} holds no event")
    click.echo(f"ok: {len(result.proven)} event(s) proven in {sizes}, signed by {result.key}")


def _admin_call(s: Settings, path: str, body: dict[str, Any], local: Any) -> Any:
    """Through the worker when it holds the embedded store, else on the store directly."""
    if _through_worker(s):
        return api.call(s, path, body, timeout=3600)
    store = _local_store(s)
    try:
        return local(store)
    finally:
        store.close()


@click.group()
def hold() -> None:
    """Legal holds: events whose target matches are kept past their retention."""


@hold.command("add")
@click.option("--target", required=True, help="An event's target.id or target.service.")
@click.option("--reason", required=True, help="Why (case, ticket); recorded with the hold.")
@click.pass_obj
def hold_add(s: Settings, target: str, reason: str) -> None:
    """Keep every event of TARGET past retention until the hold is released; prints its id."""
    from pipeline.store import retention

    if not reason.strip():
        raise CauselogError("--reason must not be empty")
    now = datetime.now(UTC)
    out = _admin_call(s, "/v1/integrity/holds", {"action": "add", "target": target, "reason": reason},
                      lambda st: {"id": retention.add_hold(st, target, reason, now)})
    click.echo(out["id"])


@hold.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def hold_list(s: Settings, as_json: bool) -> None:
    """List the active holds."""
    from pipeline.store import retention

    out = _admin_call(s, "/v1/integrity/holds", {"action": "list"}, lambda st: {"holds": retention.holds(st)})
    if as_json:
        click.echo(dumps(out["holds"]))
        return
    for h in out["holds"]:
        click.echo(f"{h['id']}  {h['target']}  {h['created_at']}  {h['reason']}")


@hold.command("release")
@click.argument("hold_id", metavar="ID")
@click.pass_obj
def hold_release(s: Settings, hold_id: str) -> None:
    """Release the hold ID (its events follow retention again)."""
    from pipeline.store import retention

    now = datetime.now(UTC)
    out = _admin_call(s, "/v1/integrity/holds", {"action": "release", "id": hold_id},
                      lambda st: {"released": retention.release_hold(st, hold_id, now)})
    if not out["released"]:
        raise CauselogError(f"no active hold with id {hold_id!r}")
    click.echo(f"released {hold_id}")


@click.command()
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@click.pass_obj
def prune(s: Settings, dry_run: bool) -> None:
    """Remove events past their retention (CAUSELOG_RETENTION, default $CAUSELOG_HOME/retention.yaml)
    unless a hold keeps them, recording each removed index range (signed) so `verify` reports it
    as pruned and still checks the rest against the same checkpoints."""
    from pipeline.integrity.keyfile import read_key
    from pipeline.integrity.retention import load_policy
    from pipeline.store import retention

    policy = load_policy(s.retention_path)
    now = datetime.now(UTC)

    def local(store: Any) -> dict[str, Any]:
        return vars(retention.prune(store, s.topic_changes, policy, read_key(s.signing_key_path), now,
                                    dry_run=dry_run))

    out = _admin_call(s, "/v1/integrity/prune", {"dry_run": dry_run}, local)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {out['removed']:,} events in {len(out['runs'])} index ranges "
               f"({out['unlogged']:,} in no log); {out['held']:,} kept by holds")
