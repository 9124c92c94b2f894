"""Where tlearn keeps what it computed (decoded pixels, image metadata, features), and how entries are named."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """TLEARN_CACHE_DIR, else $XDG_CACHE_HOME/tlearn, else ~/.cache/tlearn."""
    env = os.environ.get("TLEARN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tlearn"


def digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]
