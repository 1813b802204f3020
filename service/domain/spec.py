"""The experiment spec, the body of `POST /experiments`: datasets x weightings x seeds of one
training setup, composed from the packages' own types. Datasets are the trainer's DatasetSpec,
the training fields are TrainConfig's own (constraints, defaults, descriptions), the evaluation
is the evaluator's EvalConfig; names are checked against the registries that implement them.
Nothing here copies a field or a vocabulary."""
from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined

from evaluator.config import EvalConfig
from evaluator.metrics import validate_metrics
from trainer.config import TrainConfig
from trainer.data import DatasetSpec as TrainerDatasetSpec
from trainer.models import PRESETS
from trainer.weighting import WEIGHTINGS
from trainer.weighting import validate as resolve_weighting

MAX_RUNS = 1000  # the schema's own bound; a deployment lowers it (SNRLAB_MAX_RUNS_PER_EXPERIMENT)


def check_text(value: Any) -> Any:
    """Strings a database and a JSON encoder can hold: no NUL byte (PostgreSQL refuses it), no
    unpaired surrogate (not encodable as UTF-8). Walks lists and dict keys and values."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain a NUL byte")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must not contain an unpaired surrogate (invalid Unicode)") from None
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_text(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k)
            check_text(v)
    return value


class RequestModel(BaseModel):
    """Request models: unknown fields, non-finite numbers, NUL bytes and lone surrogates are 422s
    naming the field (they would otherwise reach SQL or the JSON encoder and give a 500); values
    are taken as their JSON type says (strict: "5" is not a number, 1.0 not an integer)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return check_text(v)


def derived(name: str, source: type[BaseModel], fields: tuple[str, ...], *, doc: str, required: tuple[str, ...] = (),
            schema: dict[str, dict] | None = None, **extra: Any) -> type[RequestModel]:
    """A request model whose fields are `source`'s own: annotation, constraints, default and
    description come from there (`required` drops a default, `schema` adds to a field's JSON
    schema, e.g. the enum of valid names). `extra` adds fields and validators of its own."""
    own = {}
    for f in fields:
        info = copy.copy(source.model_fields[f])
        if f in required:
            info.default = PydanticUndefined
        if schema and f in schema:
            info.json_schema_extra = schema[f]
        own[f] = (info.annotation, info)
    model = create_model(name, __base__=RequestModel, __module__=__name__, **own, **extra)
    model.__doc__ = doc
    return model


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _enum(names) -> dict:
    return {"enum": sorted(names)}


# ---------------------------------------------------------------- parts
class DatasetSpec(RequestModel, TrainerDatasetSpec):
    """The trainer's DatasetSpec as the API takes it; a `path` must lie under SNRLAB_DATA_ROOTS."""


class WeightingSpec(BaseModel):
    """`{"name": "p2", "k": 1, "gamma": 1}`: a weighting's identity is its name and its resolved
    parameters (the trainer fills in defaults and refuses unknown ones)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True, strict=True,
                              json_schema_extra={"additionalProperties": {"type": "number"}})
    name: str = Field(min_length=1, max_length=100, json_schema_extra=_enum(WEIGHTINGS))

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if check_text(v) not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {v!r}; valid: {', '.join(sorted(WEIGHTINGS))}")
        return v

    @model_validator(mode="after")
    def _params(self) -> WeightingSpec:
        for key, value in (self.model_extra or {}).items():
            check_text(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"weighting parameter {key!r} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"weighting parameter {key!r} must be a finite number, not {value}")
        object.__setattr__(self, "__pydantic_extra__", resolve_weighting(self.name, self.model_extra or {}))
        return self

    @property
    def params(self) -> dict[str, float]:
        return dict(sorted((self.model_extra or {}).items()))

    @property
    def label(self) -> str:
        return weighting_label(self.name, self.params)


def weighting_label(name: str, params: dict[str, float]) -> str:
    """The one label of a weighting, its leaderboard column: `p2(gamma=1,k=1)`, or just `debias`."""
    if not params:
        return name
    return f"{name}({','.join(f'{k}={v:g}' for k, v in sorted(params.items()))})"


def _unique(v: list, what: str) -> list:
    if len(set(v)) != len(v):
        raise ValueError(f"{what} must be unique")
    return v


def _known_preset(cls, v: str) -> str:
    if v not in PRESETS:
        raise ValueError(f"unknown preset {v!r}; valid: {', '.join(sorted(PRESETS))}")
    return v


def _unique_seeds(cls, v: list[int]) -> list[int]:
    return _unique(v, "seeds")


ModelSpec = derived("ModelSpec", TrainConfig, ("preset", "learn_sigma", "class_conditional"), required=("preset",),
                    schema={"preset": _enum(PRESETS)},
                    doc="The UNet: a preset of trainer.models.PRESETS, ADM's learned variance, class conditioning.",
                    __validators__={"_known_preset": field_validator("preset")(_known_preset)})

TRAINING_FIELDS = ("steps", "batch_size", "lr", "weight_decay", "grad_clip", "ema", "ema_warmup", "target", "schedule",
                   "num_timesteps", "normalize", "t_sampling", "t_sampling_params", "learned_weighting", "checkpoint_every")
TrainingSpec = derived(
    "TrainingSpec", TrainConfig, TRAINING_FIELDS, required=("steps",),
    doc="The trainer's TrainConfig fields shared by every run, and the seeds (one run per seed).",
    seeds=(list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(default=[0], min_length=1, max_length=100)),
    __validators__={"_unique_seeds": field_validator("seeds")(_unique_seeds)},
)


class Resources(RequestModel):
    workers_per_run: int = Field(default=1, ge=1, le=256, description="Ray Train workers (one CPU each) of every run")
    gpus_per_worker: float = Field(default=0, ge=0, le=16)


# ---------------------------------------------------------------- the spec
class ExperimentSpec(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    datasets: list[DatasetSpec] = Field(min_length=1, max_length=20)
    weightings: list[WeightingSpec] = Field(min_length=1, max_length=50)
    model: ModelSpec
    training: TrainingSpec
    evaluation: EvalConfig = Field(description="the evaluator's EvalConfig. Its `seed` offsets each run's sampling seed: a "
                                               "run of seed s samples with evaluation.seed + s, so the runs that share a "
                                               "seed share their sampling noise (paired comparisons)")
    resources: Resources = Resources()

    @field_validator("evaluation")
    @classmethod
    def _fits(cls, ev: EvalConfig, info: ValidationInfo) -> EvalConfig:
        for ds in info.data.get("datasets") or []:
            validate_metrics(ev.metrics, ds.name)  # fd_<dataset> must match every dataset
        training = info.data.get("training")
        if training is not None:
            late = [s for s in ev.at_steps if s >= training.steps]
            if late:
                raise ValueError(f"at_steps: {late} not below training.steps={training.steps} "
                                 "(the final checkpoint is always evaluated)")
            for t in ev.steps:
                if t > training.num_timesteps:
                    raise ValueError(f"steps: T={t} exceeds training.num_timesteps={training.num_timesteps}")
        return ev

    @model_validator(mode="after")
    def _size(self) -> ExperimentSpec:
        n = len(self.datasets) * len(self.weightings) * len(self.training.seeds)
        if n > MAX_RUNS:
            raise ValueError(f"the spec expands to {n} runs; at most {MAX_RUNS} are allowed")
        _unique([w.label for w in self.weightings], "weightings")
        _unique([d.model_dump_json() for d in self.datasets], "datasets")
        return self

    def canonical_hash(self) -> str:
        return sha256_json(self.model_dump(mode="json"))
