"""Adapter from a run's evaluation spec to `evaluator.evaluate` (runs inside the run's Ray actor).

Returns one dict per evaluated cell: num_steps (T), sampler, metric, value, num_gen, extractor,
plus the evaluator's extra fields (kept in results.extra). Sample grids and analysis PNGs
belong in out_dir, which the API serves under /runs/{id}/artifacts/."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def evaluate_run(*, checkpoint: str, evaluation: dict[str, Any], config: dict[str, Any], out_dir: str,
                 resources: dict[str, Any], data_dir: str | None = None) -> list[dict[str, Any]]:
    from evaluator import evaluate

    rows = evaluate(
        checkpoint,
        steps=list(evaluation["steps"]),
        samplers=list(evaluation["samplers"]),
        metrics=list(evaluation["metrics"]),
        num_samples=int(evaluation["num_samples"]),
        seed=int(config.get("seed", 0)),
        num_actors=int(resources.get("workers_per_run", 1)),
        num_gpus_per_actor=float(resources.get("gpus_per_worker", 0)),
        data_dir=data_dir,
    )
    if evaluation.get("analyses", True):
        _analyses(checkpoint, evaluation, config, out_dir)
    return [{"num_steps": r.pop("T"), **r} for r in rows]


def _analyses(checkpoint: str, evaluation: dict[str, Any], config: dict[str, Any], out_dir: str) -> None:
    """Artifacts are a by-product: a failing plot is reported next to them, not as a failed run."""
    from evaluator.analysis import ONE_STEP_TS, run_analyses

    T = int(config.get("num_timesteps", 1000))
    try:
        run_analyses(checkpoint, out_dir, steps=list(evaluation["steps"]), sampler=evaluation["samplers"][0],
                     num_images=int(evaluation.get("analysis_images", 16)), stride=int(evaluation.get("analysis_stride", 10)),
                     seed=int(config.get("seed", 0)), one_step_ts=[t for t in ONE_STEP_TS if t < T] or [T - 1])
    except Exception as e:  # noqa: BLE001
        from service.executor import readable_error

        log.exception("analyses failed for %s", checkpoint)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "analyses_error.txt").write_text(readable_error(e) + "\n")
