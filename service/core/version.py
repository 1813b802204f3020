"""Code version stamped on experiments (provenance on the leaderboard)."""
from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path


@lru_cache
def code_version() -> str:
    try:
        pkg = metadata.version("snrlab")
    except metadata.PackageNotFoundError:  # pragma: no cover
        pkg = "0+unknown"
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode == 0 and sha.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
            return f"{pkg}+g{sha.stdout.strip()}{'.dirty' if dirty.stdout.strip() else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return pkg
