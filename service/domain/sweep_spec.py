"""The sweep spec (request): a Ray Tune search space over an experiment spec.

A sweep is a `base` ExperimentSpec (one dataset, one weighting, one seed: the defaults) plus a
`search_space` whose keys override parts of it. Every point Tune can sample becomes a spec that
goes through the same ExperimentSpec and TrainConfig validation as an experiment; `check_sweep`
runs that validation for every finite combination before anything starts, so a bad weighting
parameter is a 422 naming the search-space key, not a failed trial an hour later."""
from __future__ import annotations

import importlib
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from evaluator.metrics import higher_is_better
from service.core.errors import SpecError
from service.domain.experiments import check_data_roots, normalise_path
from service.domain.jobs import RunRow, expand_runs
from service.domain.spec import (
    MAX_RUNS,
    DatasetSpec,
    ExperimentSpec,
    RequestModel,
    WeightingSpec,
)

CATEGORICAL = ("weighting", "dataset", "target", "t_sampling")
INTEGER = ("batch_size", "steps", "seed")
FLOAT = ("lr",)
WEIGHTING_PARAM = "weighting."  # prefix: `weighting.gamma`, `weighting.k`
T_SAMPLING_PARAM = "t_sampling."  # prefix: `t_sampling.p_mean`, `t_sampling.s`
SEARCHES = ("grid", "random", "optuna")
MAX_CHECKED = 2000  # finite combinations validated up front
MAX_TRIALS = MAX_RUNS

Value = Annotated[StrictStr | StrictInt | StrictFloat | dict[str, StrictStr | StrictInt | StrictFloat | None], Field()]


class Domain(RequestModel):
    """Exactly one of: `{"grid": [...]}` (every value, search=grid), `{"choice": [...]}`,
    `{"uniform": [lo, hi]}`, `{"loguniform": [lo, hi]}`, `{"randint": [lo, hi]}` (hi exclusive)."""

    grid: list[Value] | None = Field(default=None, min_length=1, max_length=100)
    choice: list[Value] | None = Field(default=None, min_length=1, max_length=100)
    uniform: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    loguniform: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    randint: Annotated[list[int], Field(min_length=2, max_length=2)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Domain:
        given = [k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of grid, choice, uniform, loguniform, randint")
        lo_hi = self.uniform or self.loguniform or self.randint
        if lo_hi is not None:
            lo, hi = lo_hi
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{given[0]}: need finite lo < hi, got [{lo}, {hi}]")
            if self.loguniform is not None and lo <= 0:
                raise ValueError(f"loguniform: lo must be > 0, got {lo}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None)


class SweepSpec(RequestModel):
    name: str | None = Field(default=None, min_length=1, max_length=200, description="default: base.name")
    base: ExperimentSpec = Field(description="one dataset, one weighting, one seed: what the search space overrides")
    search_space: dict[Annotated[str, Field(min_length=1, max_length=100)], Domain] = Field(
        min_length=1, max_length=20,
        description="keys: weighting, weighting.<param> (e.g. weighting.gamma), dataset, lr, target, t_sampling, "
                    "t_sampling.<param>, batch_size, steps, seed",
        json_schema_extra={"propertyNames": {"pattern": rf"^({'|'.join(CATEGORICAL + INTEGER + FLOAT)}|weighting\.\w+|t_sampling\.\w+)$"}})
    search: Literal["grid", "random", "optuna"] = "grid"
    scheduler: Literal["fifo", "asha"] = Field(default="fifo", description="asha needs base.evaluation.at_steps")
    metric: str = Field(min_length=1, max_length=50, description="one of base.evaluation.metrics")
    num_steps: int | None = Field(default=None, gt=0, description="the T at which the metric is read; "
                                  "default: the only one of base.evaluation.steps")
    sampler: str | None = Field(default=None, min_length=1, max_length=50, description="default: base.evaluation.samplers[0]")
    mode: Literal["min", "max"] | None = Field(default=None, description="default: the metric's direction")
    num_samples: int = Field(default=1, ge=1, le=MAX_TRIALS, description="trials (random, optuna) or repeats of the grid")
    max_concurrent_trials: int | None = Field(default=None, ge=1, le=256,
                                              description="default and ceiling: as many runs as the cluster fits at once")
    search_seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seed of the random and optuna searches")

    @property
    def experiment_name(self) -> str:
        return self.name or self.base.name


# ---------------------------------------------------------------- values <-> Tune values
def tune_value(key: str, value: Any) -> Any:
    """What Tune sees (and what Optuna stores) for a value: numbers and names stay as they are; a
    weighting or dataset given as an object becomes its canonical JSON (the weighting's identity:
    its name and resolved parameters), which `spec_value` reads back. Nothing is parsed from a label."""
    if isinstance(value, dict):
        if key == "weighting":
            w = WeightingSpec(**value)
            return json.dumps({"name": w.name, **w.params}, sort_keys=True)
        if key == "dataset":
            return DatasetSpec(**value).model_dump_json(exclude_none=True, exclude_defaults=True)
    return value


def spec_value(key: str, value: Any) -> Any:
    """A Tune value of `key` as the spec takes it (the inverse of `tune_value`)."""
    if key in ("weighting", "dataset"):
        if isinstance(value, str) and value.startswith("{"):
            return json.loads(value)
        return {"name": value}
    return value


def trial_spec(spec: SweepSpec, point: dict[str, Any]) -> ExperimentSpec:
    """The one-run ExperimentSpec of a sampled point: everything a sweep searches is a spec field."""
    base = spec.base.model_dump(mode="json")
    base["name"] = spec.experiment_name
    for key in sorted(point, key=lambda k: (k.startswith(WEIGHTING_PARAM), k)):  # weighting before its params
        value = point[key]
        if key == "weighting":
            base["weightings"] = [spec_value(key, value)]
        elif key.startswith(WEIGHTING_PARAM):
            base["weightings"][0][key[len(WEIGHTING_PARAM):]] = value
        elif key.startswith(T_SAMPLING_PARAM):
            base["training"]["t_sampling_params"] = {**(base["training"].get("t_sampling_params") or {}),
                                                     key[len(T_SAMPLING_PARAM):]: value}
        elif key == "dataset":
            base["datasets"] = [spec_value(key, value)]
        elif key == "seed":
            base["training"]["seeds"] = [value]
        else:
            base["training"][key] = value
    return ExperimentSpec.model_validate(base)


def trial_run_row(spec: SweepSpec, point: dict[str, Any], *, checkpoint_every: int | None = None) -> RunRow:
    """The run of one trial: the experiment's own expansion of its one-run spec."""
    [row] = expand_runs(trial_spec(spec, point), checkpoint_every=checkpoint_every)
    return row


# ---------------------------------------------------------------- validation
def _kinds_for(key: str) -> tuple[str, ...]:
    if key in CATEGORICAL:
        return ("grid", "choice")
    if key in INTEGER:
        return ("grid", "choice", "randint")
    return ("grid", "choice", "uniform", "loguniform", "randint")


def _check_keys(spec: SweepSpec) -> None:
    valid = [*CATEGORICAL, *INTEGER, *FLOAT, f"{WEIGHTING_PARAM}<param>", f"{T_SAMPLING_PARAM}<param>"]
    for key, dom in spec.search_space.items():
        loc = ("body", "search_space", key)
        known = key in CATEGORICAL or key in INTEGER or key in FLOAT or any(
            key.startswith(prefix) and len(key) > len(prefix) for prefix in (WEIGHTING_PARAM, T_SAMPLING_PARAM))
        if not known:
            raise SpecError(loc, f"unknown search-space key {key!r}; valid: {', '.join(valid)}")
        if dom.kind not in _kinds_for(key):
            raise SpecError(loc, f"{key!r} takes {' or '.join(_kinds_for(key))}, not {dom.kind}")
        if spec.search == "grid" and dom.kind != "grid":
            raise SpecError(loc, f"search 'grid' takes only grid domains; {key!r} is {dom.kind} (use search: random)")
        if spec.search == "optuna" and dom.kind == "grid":
            raise SpecError(loc, f"search 'optuna' cannot take grid domains; give {key!r} as choice")
        values = dom.grid or dom.choice or []
        for i, v in enumerate(values):
            if isinstance(v, dict) and key not in ("weighting", "dataset"):
                raise SpecError((*loc, dom.kind, i), f"{key!r} values are plain values, not objects")
        try:
            labels = [tune_value(key, v) for v in values]
        except (ValidationError, ValueError) as e:
            raise SpecError((*loc, dom.kind), _first_error(e)) from None
        if len(set(map(json.dumps, labels))) != len(labels):
            raise SpecError((*loc, dom.kind), f"{key!r} values must be unique")


def _check_base(spec: SweepSpec) -> None:
    base = spec.base
    for field, n in (("datasets", len(base.datasets)), ("weightings", len(base.weightings))):
        if n != 1:
            raise SpecError(("body", "base", field), f"a sweep's base has exactly one of {field} (the search space varies it); got {n}")
    if len(base.training.seeds) != 1:
        raise SpecError(("body", "base", "training", "seeds"), "a sweep's base has exactly one seed (sweep `seed` to vary it)")


def _resolve_target(spec: SweepSpec) -> SweepSpec:
    ev = spec.base.evaluation
    if spec.metric not in ev.metrics:
        raise SpecError(("body", "metric"), f"metric {spec.metric!r} is not evaluated; base.evaluation.metrics: {', '.join(ev.metrics)}")
    num_steps = spec.num_steps
    if num_steps is None:
        if len(ev.steps) != 1:
            raise SpecError(("body", "num_steps"), f"say at which T the metric is read: one of base.evaluation.steps {ev.steps}")
        num_steps = ev.steps[0]
    if num_steps not in ev.steps:
        raise SpecError(("body", "num_steps"), f"num_steps {num_steps} is not evaluated; base.evaluation.steps: {ev.steps}")
    sampler = spec.sampler or ev.samplers[0]
    if sampler not in ev.samplers:
        raise SpecError(("body", "sampler"), f"sampler {sampler!r} is not evaluated; base.evaluation.samplers: {', '.join(ev.samplers)}")
    mode = spec.mode or ("max" if higher_is_better(spec.metric) else "min")
    if spec.scheduler == "asha" and not ev.at_steps:
        raise SpecError(("body", "scheduler"), "scheduler 'asha' stops trials on intermediate results: set "
                        "base.evaluation.at_steps (training steps at which the metric is also evaluated)")
    if spec.search == "optuna" and not _importable("optuna"):
        raise SpecError(("body", "search"), "search 'optuna' needs the optuna package, which is not installed "
                        "here; valid: grid, random")
    return spec.model_copy(update=dict(num_steps=num_steps, sampler=sampler, mode=mode))


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def corner_values(key: str, dom: Domain) -> list[Any]:
    """Every value of a finite domain; the two ends of a continuous one (both must be valid)."""
    if dom.grid is not None or dom.choice is not None:
        return [tune_value(key, v) for v in (dom.grid or dom.choice or [])]
    if dom.randint is not None:
        return sorted({dom.randint[0], dom.randint[1] - 1})
    return list(dom.uniform or dom.loguniform or ())


def num_trials(spec: SweepSpec) -> int:
    """Grid values multiply (Tune's grid_search); random/optuna draw num_samples points (times any grid)."""
    grid = math.prod(len(d.grid) for d in spec.search_space.values() if d.grid is not None)
    return grid * spec.num_samples


def points_to_check(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    keys = list(spec.search_space)
    for combo in itertools.product(*(corner_values(k, spec.search_space[k]) for k in keys)):
        yield dict(zip(keys, combo))


def check_sweep(spec: SweepSpec, *, data_roots: Iterable[Path] = (),
                check_trial: Callable[[ExperimentSpec], None] | None = None) -> SweepSpec:
    """Everything a sweep can be refused for before it starts (SpecError: 422 naming the field).
    `check_trial` is called with every corner trial's spec (the service's limits). Returns the
    spec with num_steps, sampler and mode resolved and dataset paths normalised."""
    _check_base(spec)
    _check_keys(spec)
    spec = _resolve_target(spec)
    n = num_trials(spec)
    if n > MAX_TRIALS:
        raise SpecError(("body", "num_samples"), f"the sweep expands to {n} trials; at most {MAX_TRIALS} are allowed")
    combos = math.prod(len(corner_values(k, d)) for k, d in spec.search_space.items())
    if combos > MAX_CHECKED:
        raise SpecError(("body", "search_space"), f"the search space has {combos} combinations to validate; at most {MAX_CHECKED}")
    spec = _normalise_paths(spec, data_roots)
    for point in points_to_check(spec):
        try:
            exp_spec = trial_spec(spec, point)
            check_data_roots(exp_spec, data_roots=data_roots)
            expand_runs(exp_spec)
            if check_trial is not None:
                check_trial(exp_spec)
        except ValidationError as e:
            err = e.errors()[0]
            raise SpecError(_blame(point, err["loc"]), f"trial {_show(point)}: {_msg(err)}") from None
        except SpecError as e:
            loc = e.loc[3:] if e.loc[:2] == ("body", "runs") else e.loc[1:]  # runs.0.<field> / datasets.0.path
            raise SpecError(_blame(point, loc), f"trial {_show(point)}: {e.message}") from None
    return spec


def _normalise_paths(spec: SweepSpec, data_roots: Iterable[Path]) -> SweepSpec:
    """Dataset paths of the base and of the `dataset` domain, normalised as an experiment's are
    (domain.experiments.normalise_path): the trials read exactly what was checked."""
    try:
        base = check_data_roots(spec.base, data_roots=data_roots)
    except SpecError as e:
        raise SpecError(("body", "base", *e.loc[1:]), e.message) from None
    dom = spec.search_space.get("dataset")
    if dom is None or dom.kind not in ("grid", "choice"):
        return spec.model_copy(update={"base": base})
    values = []
    for i, v in enumerate(getattr(dom, dom.kind)):
        if isinstance(v, dict) and isinstance(v.get("path"), str):
            v = {**v, "path": normalise_path(v["path"], data_roots=data_roots,
                                                  loc=("body", "search_space", "dataset", dom.kind, i, "path"))}
        values.append(v)
    space = {**spec.search_space, "dataset": dom.model_copy(update={dom.kind: values})}
    return spec.model_copy(update={"base": base, "search_space": space})


def _blame(point: dict[str, Any], loc: tuple | list) -> tuple:
    """The search-space key at fault for an error of the trial's spec (or trainer config) at `loc`."""
    head = loc[0] if loc else None
    if head in ("weightings", "weighting", "weighting_params"):
        candidates = [k for k in point if k.startswith(WEIGHTING_PARAM)] + ["weighting"]
    elif head in ("datasets", "dataset"):
        candidates = ["dataset"]
    elif head == "training" and len(loc) > 1 and loc[1] == "t_sampling_params":
        candidates = [k for k in point if k.startswith(T_SAMPLING_PARAM)] + ["t_sampling"]
    elif head == "training" and len(loc) > 1:
        candidates = ["seed" if loc[1] == "seeds" else str(loc[1])]
    elif head == "evaluation":  # at_steps below steps; fd_<dataset> of the dataset
        candidates = ["steps", "dataset"]
    else:
        candidates = [str(head)]
    for key in candidates:
        if key in point:
            return ("body", "search_space", key)
    return ("body", "base", *loc)  # not the space's doing: the base itself


def _msg(err: dict) -> str:
    msg = err["msg"]
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def _first_error(e: Exception) -> str:
    return _msg(e.errors()[0]) if isinstance(e, ValidationError) else str(e)


def _show(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True, default=str)
