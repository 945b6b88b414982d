"""The worker's checkpoint signer: signs the committed state of each integrity log.

Called by the ingest loop right after a checkpoint transaction committed (so a signed checkpoint
only covers rows that are stored *and* whose offsets are committed: a replay after a crash can
never produce a different log below it). Each log is signed at most every
``CAUSELOG_SIGN_SECONDS`` when it grew, and on shutdown or when its partition is revoked. A
checkpoint goes to three places: the ``checkpoints`` table, the compacted topic
``<prefix>.checkpoints`` (key ``<origin>/<size>``) and, with ``CAUSELOG_CHECKPOINT_DIR``, a file
``<dir>/<origin>/<size>``. A failure to publish is logged and retried at the next round.

Origins are ``causelog/<deployment>/<partition>``; the deployment id is ``CAUSELOG_DEPLOYMENT``
or, by default, ``<Kafka cluster id>/<topic prefix>/<group>``: the logs belong to the partitions
of one topic in one cluster as one worker group numbers them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from pipeline.bus import DeliveryTracker, make_producer
from pipeline.errors import BusError, CauselogError
from pipeline.integrity.checkpoint import Checkpoint
from pipeline.integrity.keyfile import load_or_create
from pipeline.integrity.note import Signer
from pipeline.settings import Settings
from pipeline.store.client import Store

log = logging.getLogger("causelog.signer")

CHECKPOINT_COLUMNS = ("origin", "topic", "partition", "size", "root", "note", "key_name", "signed_at")


def deployment_id(settings: Settings, timeout: float = 10.0) -> str:
    """``CAUSELOG_DEPLOYMENT``, or ``<Kafka cluster id>/<prefix>/<group>``."""
    if settings.deployment:
        return settings.deployment
    try:
        md = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BusError(f"cannot read the Kafka cluster id from {settings.kafka_bootstrap}: {exc}") from exc
    return f"{md.cluster_id}/{settings.topic_prefix}/{settings.group}"


class CheckpointSigner:
    """Signs and publishes checkpoints of the logs (see the module docstring). Not thread-safe:
    the ingest loop calls it."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer,
        deployment: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer
        self.deployment = deployment
        self.clock = clock
        self.wall = wall
        self.signed: dict[int, int] = {}  # partition -> size last published
        self.last: dict[int, float] = {}
        self._producer: Producer | None = None

    @classmethod
    def for_worker(cls, settings: Settings, store: Store) -> CheckpointSigner:
        """The worker's signer: deployment id resolved, key loaded or created."""
        deployment = deployment_id(settings)
        signer, created = load_or_create(settings.signing_key_path, f"causelog/{deployment}")
        if created:
            log.warning("created the checkpoint signing key %s; verifier key: %s",
                        settings.signing_key_path, signer.verifier.vkey)
        return cls(settings, store, signer, deployment)

    def origin(self, partition: int) -> str:
        """The origin line of a partition's checkpoints."""
        return f"causelog/{self.deployment}/{partition}"

    def committed(self, heads: Mapping[int, tuple[int, bytes]], *, force: bool = False) -> list[Checkpoint]:
        """Sign the logs in ``heads`` (``partition -> (size, root)``, all committed) that grew
        since their last checkpoint and are due (or all that grew, with ``force``)."""
        now = self.clock()
        due = [(p, size, root) for p, (size, root) in sorted(heads.items())
               if size > self.signed.get(p, 0)
               and (force or now - self.last.get(p, float("-inf")) >= self.settings.sign_seconds)]
        if not due:
            return []
        made = [(p, Checkpoint(self.origin(p), size, root)) for p, size, root in due]
        notes = [(p, cp, cp.sign(self.signer)) for p, cp in made]
        try:
            self._publish(notes)
        except (CauselogError, OSError) as exc:
            log.error("publishing %d checkpoints failed (retried at the next round): %s", len(notes), exc)
            return []
        for p, cp in made:
            self.signed[p] = cp.size
            self.last[p] = now
        log.info("signed %s", ", ".join(f"{cp.origin}@{cp.size}" for _, cp in made))
        return [cp for _, cp in made]

    def _publish(self, notes: list[tuple[int, Checkpoint, str]]) -> None:
        s = self.settings
        if self._producer is None:
            self._producer = make_producer(s)
        tracker = DeliveryTracker(self._producer)
        for _, cp, note in notes:
            tracker.produce(s.topic_checkpoints, note.encode(), key=f"{cp.origin}/{cp.size}".encode())
        tracker.flush(30.0)
        signed_at = self.wall()
        rows = [[cp.origin, s.topic_changes, p, cp.size, cp.root, note, self.signer.name, signed_at]
                for p, cp, note in notes]
        self.store.insert("checkpoints", rows, CHECKPOINT_COLUMNS)
        if s.checkpoint_dir is not None:
            for _, cp, note in notes:
                write_file(s.checkpoint_dir, cp, note)


def write_file(directory: Path, cp: Checkpoint, note: str) -> Path:
    """Write ``<directory>/<origin>/<size>`` atomically (a reader never sees half a note)."""
    target = directory.joinpath(*cp.origin.split("/"), str(cp.size))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(note)
    os.replace(tmp, target)
    return target
