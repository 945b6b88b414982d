"""The fuzz modules import each other by name (runner, targets) and the receiver test helpers."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "unit" / "sources"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
