"""Where a run's files live. Ray Train gets storage_path=runs_dir and name=<run id>, so the
trainer's metrics.jsonl and checkpoints land in runs_dir/<run id>/ on every attempt."""
from __future__ import annotations

from pathlib import Path

from service.core.errors import NotFoundError


def run_dir(runs_dir: Path, run_id: str) -> Path:
    return Path(runs_dir) / run_id


def metrics_file(runs_dir: Path, run_id: str) -> Path:
    return run_dir(runs_dir, run_id) / "metrics.jsonl"


def artifacts_dir(runs_dir: Path, run_id: str) -> Path:
    return run_dir(runs_dir, run_id) / "artifacts"


def results_file(runs_dir: Path, run_id: str) -> Path:
    """Written atomically by the Ray worker when evaluation completes: the durable hand-off."""
    return run_dir(runs_dir, run_id) / "results.json"


def train_done_file(runs_dir: Path, run_id: str) -> Path:
    """Written when training completes, so a retry after an evaluation failure skips training."""
    return run_dir(runs_dir, run_id) / "train_done.json"


def list_artifacts(runs_dir: Path, run_id: str) -> list[str]:
    root = artifacts_dir(runs_dir, run_id)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def artifact_file(runs_dir: Path, run_id: str, path: str) -> Path:
    """The file `path` names under the run's artifacts; NotFoundError for anything else (a `..`,
    a link out, a NUL byte, a name too long)."""
    root = artifacts_dir(runs_dir, run_id).resolve()
    try:
        target = (root / path).resolve()
        found = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise NotFoundError(f"artifact {path[:200]!r} not found for run {run_id!r}")
    return target
