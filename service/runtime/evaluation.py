"""Adapter from a run's evaluation spec to `evaluator.evaluate` (runs inside the run's Ray actor).

`evaluation` is parsed once into the evaluator's EvalConfig (its defaults, its checks); this
module derives nothing. Returns one dict per evaluated cell: num_steps (T) plus the evaluator's
row (metric, value, floor, num_gen, extractor, features, ...; the extra ones are kept in
results.extra). Sample grids, analysis PNGs and the stored features (features/) belong in
out_dir, which the API serves under /runs/{id}/artifacts/."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def evaluate_run(*, checkpoint: str, evaluation: dict[str, Any], config: dict[str, Any], out_dir: str,
                 resources: dict[str, Any], data_dir: str | None = None) -> list[dict[str, Any]]:
    from evaluator import EvalConfig, evaluate

    # until the experiment spec carries EvalConfig.seed, the run's training seed seeds its samples (as before)
    cfg = EvalConfig.model_validate({"seed": config.get("seed", 0), **evaluation})
    rows = evaluate(checkpoint, cfg, num_actors=int(resources.get("workers_per_run", 1)),
                    num_gpus_per_actor=float(resources.get("gpus_per_worker", 0)), data_dir=data_dir, out_dir=out_dir)
    if cfg.analyses:
        _analyses(checkpoint, cfg, out_dir)
    return [{"num_steps": r.pop("T"), **r} for r in rows]


def _analyses(checkpoint: str, cfg, out_dir: str) -> None:
    """Artifacts are a by-product: a failing plot is reported next to them, not as a failed run."""
    from evaluator.analysis import run_analyses

    try:
        run_analyses(checkpoint, out_dir, cfg)
    except Exception as e:  # noqa: BLE001
        from service.runtime.executor import readable_error

        log.exception("analyses failed for %s", checkpoint)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "analyses_error.txt").write_text(readable_error(e) + "\n")
