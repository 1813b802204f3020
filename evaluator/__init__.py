"""snrlab evaluator: respaced DDPM/DDIM samplers, clean-fid scoring with offline Inception
weights, a fast domain Frechet distance, Ray evaluation actors and the paper's bias analyses.

Public API (see docs/CONTRACTS.md): `EvalConfig`, `evaluate(checkpoint_dir, cfg, ...)`,
`rescore(features_dir, metrics, ...)`, `higher_is_better(metric)`, `METRICS`, `SAMPLERS`.
Heavy modules import lazily so `python -m evaluator.weights fetch` stays cheap."""
from __future__ import annotations

__all__ = ["EvalConfig", "evaluate", "rescore", "higher_is_better", "METRICS", "SAMPLERS"]

_WHERE = {"EvalConfig": "evaluator.config", "evaluate": "evaluator.api", "rescore": "evaluator.api",
          "higher_is_better": "evaluator.metrics", "METRICS": "evaluator.metrics", "SAMPLERS": "evaluator.sampling"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
