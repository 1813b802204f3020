"""Where a run's files live. Ray Train gets storage_path=runs_dir and name=<run id>, so the
trainer's metrics.jsonl and checkpoints land in runs_dir/<run id>/ on every attempt."""
from __future__ import annotations

from pathlib import Path


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
