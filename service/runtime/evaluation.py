"""The evaluation of a run's checkpoint, on Ray (in the run's actor): the evaluator's scores and,
as a by-product, its analyses. Everything comes from the run's EvalConfig; nothing is derived
here. Returns one dict per evaluated cell: num_steps (T) plus the evaluator's row (metric, value,
floor, num_gen, extractor, features, ...; the extra keys are kept in results.extra). Sample grids,
analysis PNGs and the stored features (features/) belong in out_dir, which the API serves under
/runs/{id}/artifacts/."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from evaluator.config import EvalConfig
from service.core.errors import readable_error

log = logging.getLogger(__name__)


def evaluate_run(checkpoint: str, evaluation: EvalConfig, *, num_actors: int, num_gpus_per_actor: float, out_dir: str,
                 data_dir: str | None = None) -> list[dict[str, Any]]:
    from evaluator import evaluate  # heavy (torch): only on the Ray side

    rows = evaluate(checkpoint, evaluation, num_actors=num_actors, num_gpus_per_actor=num_gpus_per_actor,
                    data_dir=data_dir, out_dir=out_dir)
    if evaluation.analyses:
        _analyses(checkpoint, evaluation, out_dir)
    return [{"num_steps": r.pop("T"), **r} for r in rows]


def _analyses(checkpoint: str, evaluation: EvalConfig, out_dir: str) -> None:
    """Artifacts are a by-product: a failing plot is reported next to them, not as a failed run."""
    from evaluator.analysis import run_analyses  # heavy (torch): only on the Ray side

    try:
        run_analyses(checkpoint, out_dir, evaluation)
    except Exception as e:  # noqa: BLE001
        log.exception("analyses failed for %s", checkpoint)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "analyses_error.txt").write_text(readable_error(e) + "\n")
