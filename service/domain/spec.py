"""Pydantic schemas: the experiment spec (request) and the read models (responses)."""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from service.domain import registry
from service.core.lifecycle import ExperimentStatus, RunStatus

MAX_RUNS = 1000


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
    naming the field (they would otherwise reach SQL or the JSON encoder and give a 500)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return check_text(v)


# ---------------------------------------------------------------- experiment spec (request)
class DatasetSpec(RequestModel):
    """Mirrors the trainer's DatasetSpec; a `path` must lie under SNRLAB_DATA_ROOTS."""

    name: str = Field(min_length=1, max_length=100)
    path: str | None = Field(default=None, max_length=4096, description="`folder`/`cifar10`: a directory under SNRLAB_DATA_ROOTS")
    resolution: int | None = Field(default=None, ge=4, le=1024)
    split: Literal["train", "test"] = "train"
    num_images: int | None = Field(default=None, ge=1, le=10_000_000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return registry.check_name("dataset", v, registry.datasets())

    @model_validator(mode="after")
    def _path(self) -> DatasetSpec:
        needs_path = self.name in ("folder", "cifar10")
        if needs_path and not self.path:
            raise ValueError(f"dataset {self.name!r} needs `path`")
        if not needs_path and self.path is not None:
            raise ValueError(f"`path` is not allowed for dataset {self.name!r}")
        return self


class WeightingSpec(BaseModel):
    """`{"name": "p2", "k": 1, "gamma": 1}`: the name plus the weighting's keyword parameters."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False,
                              json_schema_extra={"additionalProperties": {"type": "number"}})
    name: str = Field(min_length=1, max_length=100)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return registry.check_name("weighting", check_text(v), registry.weightings())

    @model_validator(mode="after")
    def _params(self) -> WeightingSpec:
        for key, value in (self.model_extra or {}).items():
            check_text(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"weighting parameter {key!r} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"weighting parameter {key!r} must be a finite number, not {value}")
        # the trainer resolves defaults and rejects unknown or degenerate parameters
        self.__pydantic_extra__ = registry.resolve_weighting(self.name, self.model_extra or {})
        return self

    @property
    def params(self) -> dict[str, float]:
        return dict(sorted((self.model_extra or {}).items()))

    @property
    def label(self) -> str:
        """Column name on the leaderboard: `p2(gamma=1,k=1)`, or just `debias`."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(f'{k}={v:g}' for k, v in self.params.items())})"


class ModelSpec(RequestModel):
    preset: str = Field(min_length=1, max_length=100)
    learn_sigma: bool = False

    @field_validator("preset")
    @classmethod
    def _known(cls, v: str) -> str:
        return registry.check_name("preset", v, registry.presets())


class TrainingSpec(RequestModel):
    steps: int = Field(gt=0, le=10_000_000)
    batch_size: int = Field(default=64, gt=0, le=65_536)
    lr: float = Field(default=2e-4, gt=0, le=1)
    ema: float = Field(default=0.999, ge=0, lt=1)
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(default=[0], min_length=1, max_length=100)
    checkpoint_every: int | None = Field(default=None, ge=1, le=10_000_000, description="default: the trainer's")
    target: Literal["eps", "x0", "v"] = "eps"
    schedule: Literal["linear", "cosine"] = "linear"
    num_timesteps: int = Field(default=1000, ge=2, le=100_000)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be unique")
        return v


class EvaluationSpec(RequestModel):
    steps: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, max_length=100, description="sampling steps T")
    samplers: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(default=["ddpm"], min_length=1, max_length=20)
    num_samples: int = Field(default=1000, gt=0, le=1_000_000)
    metrics: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(min_length=1, max_length=20)
    analyses: bool = Field(default=True, description="also write the evaluator's sample grids and bias-analysis PNGs (run artifacts)")
    analysis_images: int = Field(default=16, ge=1, le=256, description="images per analysis grid")
    analysis_stride: int = Field(default=10, ge=1, le=100_000, description="timestep stride of the MSE-vs-t analysis")
    at_steps: list[Annotated[int, Field(gt=0)]] = Field(
        default=[], max_length=50,
        description="training steps whose EMA weights are also evaluated (the paper's Fig. 7a), while training goes on; "
                    "each below training.steps. The final checkpoint is always evaluated")

    @field_validator("samplers")
    @classmethod
    def _samplers(cls, v: list[str]) -> list[str]:
        valid = registry.samplers()
        return v if valid is None else [registry.check_name("sampler", s, valid) for s in v]

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        return registry.check_metrics(v)

    @field_validator("steps")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("steps must be unique")
        return v

    @field_validator("at_steps")
    @classmethod
    def _at_steps(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("at_steps must be unique")
        return sorted(v)


class ResourcesSpec(RequestModel):
    workers_per_run: int = Field(default=1, ge=1, le=256)
    gpus_per_worker: float = Field(default=0, ge=0, le=16)


class ExperimentSpec(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    datasets: list[DatasetSpec] = Field(min_length=1, max_length=20)
    weightings: list[WeightingSpec] = Field(min_length=1, max_length=50)
    model: ModelSpec
    training: TrainingSpec
    evaluation: EvaluationSpec
    resources: ResourcesSpec = ResourcesSpec()

    @field_validator("evaluation")
    @classmethod
    def _t_within_schedule(cls, v: EvaluationSpec, info: ValidationInfo) -> EvaluationSpec:
        for ds in info.data.get("datasets") or []:
            registry.check_metrics(v.metrics, ds.name)  # fd_<dataset> must match every dataset
        training = info.data.get("training")
        if training is not None:
            late = [s for s in v.at_steps if s >= training.steps]
            if late:
                raise ValueError(f"at_steps: {late} not below training.steps={training.steps} (the final checkpoint is always evaluated)")
            for t in v.steps:
                if t > training.num_timesteps:
                    raise ValueError(f"steps: T={t} exceeds training.num_timesteps={training.num_timesteps}")
        return v

    @model_validator(mode="after")
    def _size(self) -> ExperimentSpec:
        n = len(self.datasets) * len(self.weightings) * len(self.training.seeds)
        if n > MAX_RUNS:
            raise ValueError(f"the spec expands to {n} runs; at most {MAX_RUNS} are allowed")
        labels = [w.label for w in self.weightings]
        if len(set(labels)) != len(labels):
            raise ValueError("weightings must be unique")
        datasets = [d.model_dump_json() for d in self.datasets]
        if len(set(datasets)) != len(datasets):
            raise ValueError("datasets must be unique")
        return self

    def canonical_hash(self) -> str:
        return sha256_json(self.model_dump(mode="json"))


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------- read models (responses)
class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AttemptRead(_Read):
    number: int
    status: str
    start_step: int | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class RunSummary(_Read):
    id: str
    index: int
    dataset: str
    weighting: str
    seed: int
    status: RunStatus
    current_step: int
    total_steps: int
    error: str | None
    finished_at: datetime | None


class RunRead(RunSummary):
    experiment_id: str
    attempts: list[AttemptRead]
    latest_metrics: dict[str, Any] | None
    usage: dict[str, Any] | None = Field(description="device, workers, wall seconds and device-hours of the training")
    checkpoint_path: str | None
    cancel_requested: bool
    config: dict[str, Any]
    evaluation: dict[str, Any]
    config_hash: str
    created_at: datetime
    started_at: datetime | None


class Progress(BaseModel):
    runs: int
    by_status: dict[str, int]
    fraction: float = Field(description="steps trained / steps planned, over all runs")


class ExperimentSummary(BaseModel):
    id: str
    name: str
    status: ExperimentStatus
    created_at: datetime
    finished_at: datetime | None
    progress: Progress


class ExperimentRead(ExperimentSummary):
    run_ids: list[str]
    runs: list[RunSummary]
    cancel_requested_at: datetime | None
    spec: dict[str, Any]
    spec_hash: str
    code_version: str


class ExperimentList(BaseModel):
    items: list[ExperimentSummary]
    total: int
    limit: int
    offset: int


class MetricPointRead(_Read):
    step: int
    values: dict[str, Any]


class MetricsRead(BaseModel):
    run_id: str
    points: list[MetricPointRead]


class ResultRead(_Read):
    train_step: int = Field(description="training step of the evaluated weights (total_steps: the final checkpoint)")
    num_steps: int
    sampler: str
    metric: str
    value: float
    num_gen: int | None
    extractor: str | None
    extra: dict[str, Any] | None


class ResultsRead(BaseModel):
    run_id: str
    status: RunStatus
    results: list[ResultRead]


class LeaderboardCell(BaseModel):
    mean: float
    std: float
    n: int
    num_gen: int | None
    extractor: str | None
    best: bool
    run_ids: list[str]


class LeaderboardRow(BaseModel):
    dataset: str
    train_step: int = Field(description="training step of the evaluated weights")
    num_steps: int
    metric: str
    sampler: str
    config_hash: str = Field(description="hash of the training setup shared by the row's cells (seed and weighting excluded)")
    extractor_fingerprint: str | None = Field(default=None, description="the feature extractor every cell of the row was "
                                              "scored with; cells scored with another are in another row")
    cells: dict[str, LeaderboardCell]
    best: str | None


class Provenance(BaseModel):
    experiment_ids: list[str]
    config_hashes: list[str]
    code_versions: list[str]


class Leaderboard(BaseModel):
    train_steps: Literal["final", "all"] = "final"
    metric: str | None
    sampler: str | None
    dataset: str | None
    lower_is_better: bool
    columns: list[str]
    rows: list[LeaderboardRow]
    provenance: Provenance


class TokenCreated(BaseModel):
    id: str
    name: str
    token: str


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    dispatcher: str
    version: str
