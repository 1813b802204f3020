"""Valid names come from the packages that implement them; the service never copies the lists."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def weightings() -> Mapping[str, Any]:
    from trainer.weighting import WEIGHTINGS

    return WEIGHTINGS


def presets() -> Mapping[str, Any]:
    from trainer.models import PRESETS

    return PRESETS


def datasets() -> Any:
    from trainer.data import DATASETS

    return DATASETS


def samplers() -> Any | None:
    """The evaluator's sampler names, or None while the evaluator package is not installed."""
    try:
        from evaluator import SAMPLERS
    except ImportError:
        return None
    return SAMPLERS


def check_metrics(names: list[str], dataset: str | None = None) -> list[str]:
    """The evaluator's own check (fid, kid, color_*, fd_<dataset>); ValueError lists valid names.
    A no-op while the evaluator package is not installed."""
    try:
        from evaluator.metrics import validate_metrics
    except ImportError:
        return names
    return validate_metrics(names, dataset)


def resolve_weighting(name: str, params: dict[str, Any]) -> dict[str, float]:
    """The weighting's parameters with defaults filled in; ValueError for unknown ones."""
    from trainer.weighting import validate

    return validate(name, params)


def check_name(kind: str, name: str, valid: Any) -> str:
    names = sorted(valid)
    if name not in names:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(names)}")
    return name


def lower_is_better(metric: str | None) -> bool:
    """Direction of a metric, if the evaluator declares it; FD/FID-style distances are lower-better."""
    try:
        from evaluator import HIGHER_IS_BETTER
    except ImportError:
        return True
    return metric not in HIGHER_IS_BETTER


def warm() -> None:
    """Import the registries (torch and all) at startup, not inside the first request."""
    weightings(), presets(), datasets(), samplers()
    check_metrics(["fid"])
