"""Where the evaluator keeps weights, reference statistics and trained extractors: sub-folders
of the project's one data directory (trainer.paths.data_dir)."""
from __future__ import annotations

import os
from pathlib import Path

from trainer.paths import data_dir


def sub_dir(name: str, override: str | os.PathLike | None = None) -> Path:
    path = data_dir(override) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
