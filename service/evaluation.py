"""Adapter from a run's evaluation spec to `evaluator.evaluate` (runs inside the Ray worker).

Returns one dict per evaluated cell: num_steps (T), sampler, metric, value, num_gen, extractor,
plus any extra fields the evaluator reports. Sample grids and analysis PNGs go to out_dir,
which the API serves under /runs/{id}/artifacts/."""
from __future__ import annotations

from typing import Any


def evaluate_run(*, checkpoint: str, evaluation: dict[str, Any], config: dict[str, Any], out_dir: str,
                 resources: dict[str, Any]) -> list[dict[str, Any]]:
    from evaluator import evaluate

    report = evaluate(
        checkpoint,
        steps=list(evaluation["steps"]),
        samplers=list(evaluation["samplers"]),
        metrics=list(evaluation["metrics"]),
        num_samples=int(evaluation["num_samples"]),
        out_dir=out_dir,
    )
    return [_cell(r) for r in _rows(report)]


def _rows(report: Any) -> list[Any]:
    for attr in ("results", "rows", "cells"):
        rows = report.get(attr) if isinstance(report, dict) else getattr(report, attr, None)
        if rows is not None:
            return list(rows)
    return list(report)


def _cell(row: Any) -> dict[str, Any]:
    d = dict(row) if isinstance(row, dict) else dict(vars(row))
    if "num_steps" not in d:
        d["num_steps"] = d.pop("T", d.pop("steps", None))
    return d
