"""Memoisation of pure registry validators: fn(name, params) -> resolved params."""
from __future__ import annotations

import functools
from typing import Callable


def by_params(fn: Callable[[str, dict], dict]) -> Callable[[str, dict | None], dict]:
    """Cache `fn` by (name, params): validating evaluates the entry on probe tensors, and every
    TrainConfig validates (a POST of 12 runs builds dozens). Errors are not cached; a params dict
    that cannot be a key (an unhashable value) is validated uncached, and refused there."""
    @functools.lru_cache(maxsize=1024)
    def cached(name: str, items: tuple) -> tuple:
        return tuple(fn(name, dict(items)).items())

    @functools.wraps(fn)
    def validate(name: str, params: dict | None = None) -> dict:
        params = dict(params or {})
        try:
            return dict(cached(name, tuple(sorted(params.items()))))
        except TypeError:  # unhashable
            return fn(name, params)

    return validate
