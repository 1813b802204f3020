"""The project's data directory: weights, reference statistics, runs."""
from __future__ import annotations

import os
from pathlib import Path


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """`override`, else $SNRLAB_DATA_DIR, else ~/.cache/snrlab (created on demand)."""
    root = Path(override or os.environ.get("SNRLAB_DATA_DIR") or Path.home() / ".cache" / "snrlab").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
