"""snrlab evaluator: respaced DDPM/DDIM samplers, clean-fid scoring with offline Inception
weights, a fast domain Frechet distance, Ray evaluation actors and the paper's bias analyses.

Public API: `evaluator.evaluate(...)` (see evaluator/api.py and docs/CONTRACTS.md). Heavy
modules import lazily so `python -m evaluator.weights fetch` stays cheap."""
from __future__ import annotations

__all__ = ["evaluate", "METRICS", "SAMPLERS"]


def __getattr__(name: str):
    if name == "evaluate":
        from evaluator.api import evaluate

        return evaluate
    if name == "METRICS":
        from evaluator.metrics import METRICS

        return METRICS
    if name == "SAMPLERS":
        from evaluator.sampling import SAMPLERS

        return SAMPLERS
    raise AttributeError(name)
