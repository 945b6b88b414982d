"""Schema migrations: ``schemas/clickhouse/NNN_name.sql`` applied in order, once each.

Files may hold several statements separated by ``;`` at line end and refer to the database as
``{database}``. Applied versions are recorded in ``schema_migrations`` with a checksum, so a
file edited after it was applied is reported instead of silently diverging.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.store.client import Store

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
#: The table of applied versions, created before any migration runs.
SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
    "(version UInt32, name String, checksum String, applied_at DateTime64(6, 'UTC') DEFAULT now64(6)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file text, to detect edits after apply."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        """The file's statements with ``{database}`` filled in."""
        text = self.sql.replace("{database}", database)
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
        return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files, sorted by version; duplicate versions are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise StoreError(f"migration file name {path.name!r} must look like 001_name.sql")
        version = int(m.group(1))
        if version in found:
            raise StoreError(f"two migrations share version {version:03d}: {found[version].name}, {path.name}")
        found[version] = Migration(version, m.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


def migrate(store: Store, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations in order; return those applied now.

    On a cluster (``store.cluster``) each statement runs as its cluster rewrite
    (:func:`pipeline.store.cluster.cluster_statements`); the checksums recorded are those of the
    files, the same in both modes.
    """
    db = store.database
    store.ddl(SCHEMA_MIGRATIONS.replace("{database}", db))
    applied = {
        int(v): c for v, c in store.query(f"SELECT version, checksum FROM {db}.schema_migrations FINAL").rows
    }
    done = []
    for mig in discover(directory):
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise StoreError(
                    f"migration {mig.version:03d}_{mig.name}.sql changed after it was applied "
                    "(write a new migration instead of editing an applied one)"
                )
            continue
        for statement in mig.statements(db):
            store.ddl(statement)
        store.insert("schema_migrations", [[mig.version, mig.name, mig.checksum]], ["version", "name", "checksum"])
        done.append(mig)
    return done
