"""Adapter from a run's evaluation spec to `evaluator.evaluate` (runs inside the run's Ray actor).

Returns one dict per evaluated cell: num_steps (T), sampler, metric, value, num_gen, extractor,
plus the evaluator's extra fields (kept in results.extra). Sample grids and analysis PNGs
belong in out_dir, which the API serves under /runs/{id}/artifacts/."""
from __future__ import annotations

from typing import Any


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
    return [{"num_steps": r.pop("T"), **r} for r in rows]
