"""New derived metrics for finished runs without sampling again: the evaluator stored each cell's
generated features with their provenance (checkpoint step, sampler, T, extractor fingerprint,
reference key); `rescore_run` scores them with other metrics (fd_inf, KID, the classifier score)
and records the rows like any result (each cell once)."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from evaluator import rescore
from service.core.errors import ConflictError, SpecError
from service.core.lifecycle import RunStatus
from service.runtime import paths
from service.store.models import Run
from service.store.runs import record_results


def rescore_run(session: Session, *, run: Run, metrics: list[str], runs_dir: Path, data_dir: Path | None) -> int:
    """Score the run's stored features with `metrics` and record the new cells; returns how many
    were added (cells already recorded stay as they are). The caller commits."""
    if run.status != RunStatus.SUCCEEDED.value:
        raise ConflictError(f"run {run.id} is {run.status}: only a succeeded run has all its features")
    features = paths.artifacts_dir(runs_dir, run.id) / "features"
    if not features.is_dir():
        raise ConflictError(f"run {run.id} has no stored features (it was evaluated before features were kept)")
    try:
        rows = rescore(features, metrics, data_dir=data_dir)
    except ValueError as e:
        raise SpecError(("body", "metrics"), str(e)) from None
    results = [{**{k: v for k, v in r.items() if k != "T"}, "num_steps": r["T"], "train_step": r["checkpoint_step"]}
               for r in rows]
    return record_results(session, run_id=run.id, results=results, default_train_step=run.total_steps)
