"""One fixed hash key for the whole test session (see pipeline/sources/keyed.py).

Normalizers hash with the key the I/O shells install; tests install :data:`TEST_HASH_KEY`
in-process, and write it to a 0600 file named by ``CAUSELOG_HASH_KEY_FILE`` so that the CLI
subprocesses of the integration tests hash with the same key (in-process expectations and
what the subprocess sent must agree). Golden files (tests/golden) are made with this key.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from keyed_helpers import TEST_HASH_KEY

from pipeline.sources import keyed

keyed.use(keyed.Hasher(TEST_HASH_KEY))

_key_dir = Path(tempfile.mkdtemp(prefix="causelog-test-key-"))
atexit.register(shutil.rmtree, _key_dir, ignore_errors=True)
_key_file = _key_dir / "hash.key"
_key_file.write_text(TEST_HASH_KEY.hex() + "\n", encoding="ascii")
_key_file.chmod(0o600)
os.environ["CAUSELOG_HASH_KEY_FILE"] = str(_key_file)
