"""The job contract between the service and the compute: one frozen `RunJob` per run, resolved
once when the experiment is created (the trainer's TrainConfig, the evaluator's EvalConfig, the
resources), stored as its JSON dump in the run's row and parsed once where it is used on Ray.

`expand_runs` turns a spec into its runs (dataset x weighting x seed). `EvalConfig.at_steps` is
the one source of the trainer's snapshot steps: the RunJob derives `train.snapshot_steps` from it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from evaluator.config import EvalConfig
from service.core.errors import SpecError
from service.domain.spec import ExperimentSpec, Resources, sha256_json
from service.store.models import Run
from trainer.config import TrainConfig

LABEL_SIZES = (Run.__table__.c.dataset.type.length, Run.__table__.c.weighting.type.length)  # VARCHAR(100), VARCHAR(200)

# TrainConfig fields that never change what is trained (bookkeeping, speed), and what varies
# within one setup (a leaderboard table): neither is part of the setup's hash.
BOOKKEEPING = frozenset({"log_every", "checkpoint_every", "keep_checkpoints", "snapshot_steps", "fail_at_step", "compile"})
PER_RUN = frozenset({"seed", "weighting", "weighting_params"})
# EvalConfig fields that never change a final result's value.
EVAL_BOOKKEEPING = frozenset({"at_steps", "analyses", "analysis_images", "analysis_stride", "batch_size", "shard_size", "seed"})


class RunJob(BaseModel):
    """What one run trains and how it is scored. `train.snapshot_steps` always equals
    `evaluation.at_steps` (set here, never by hand)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: TrainConfig
    evaluation: EvalConfig
    resources: Resources = Resources()

    @model_validator(mode="before")
    @classmethod
    def _snapshots_from_evaluation(cls, data: Any) -> Any:
        if isinstance(data, dict) and "train" in data and "evaluation" in data:
            train, evaluation = data["train"], data["evaluation"]
            at_steps = list((evaluation.at_steps if isinstance(evaluation, EvalConfig) else evaluation.get("at_steps")) or [])
            if isinstance(train, TrainConfig):
                train = train.model_copy(update={"snapshot_steps": at_steps})
            else:
                train = {**train, "snapshot_steps": at_steps}
            data = {**data, "train": train}
        return data

    @classmethod
    def of_run(cls, run: Any) -> RunJob:
        """The job of a stored run (its `config`, `evaluation` and `resources` columns)."""
        return cls(train=run.config, evaluation=run.evaluation, resources=run.resources)

    def setup_hash(self) -> str:
        """What a leaderboard table shares: the training setup without seed and weighting, and the
        evaluation that decides a final value. Runs with equal hashes are comparable."""
        return sha256_json({
            "train": self.train.model_dump(mode="json", exclude=BOOKKEEPING | PER_RUN),
            "evaluation": self.evaluation.model_dump(mode="json", exclude=EVAL_BOOKKEEPING),
        })[:16]


@dataclass(frozen=True)
class RunRow:
    """One run of an experiment, as it is stored: labels for the tables, the job, its setup hash."""

    index: int
    dataset: str
    weighting: str
    seed: int
    job: RunJob

    @property
    def columns(self) -> dict[str, Any]:
        return dict(index=self.index, dataset=self.dataset, weighting=self.weighting, seed=self.seed,
                    config=self.job.train.model_dump(mode="json"), evaluation=self.job.evaluation.model_dump(mode="json"),
                    resources=self.job.resources.model_dump(mode="json"), config_hash=self.job.setup_hash(),
                    total_steps=self.job.train.steps)


def expand_runs(spec: ExperimentSpec, *, checkpoint_every: int | None = None) -> list[RunRow]:
    """dataset x weighting x seed, each resolved into its RunJob (the trainer's and evaluator's own
    validation; an error names the spec field). `checkpoint_every` is the service's default,
    used where the spec leaves the trainer's; labels are cut to fit their columns."""
    rows: list[RunRow] = []
    training = spec.training.model_dump(exclude={"seeds"})
    if "checkpoint_every" not in spec.training.model_fields_set and checkpoint_every:
        training["checkpoint_every"] = checkpoint_every
    model = spec.model.model_dump()
    for i, ds in enumerate(spec.datasets):
        for j, w in enumerate(spec.weightings):
            for seed in spec.training.seeds:
                train = _train_config(dict(**training, **model, dataset=ds.model_dump(), weighting=w.name,
                                           weighting_params=w.params, seed=seed), dataset=i, weighting=j)
                # a run of seed s samples with evaluation.seed + s: runs that share a seed share their noise
                evaluation = spec.evaluation.model_copy(update={"seed": spec.evaluation.seed + seed})
                job = RunJob(train=train, evaluation=evaluation, resources=spec.resources)
                dataset = ds.name if ds.path is None else f"{ds.name}:{Path(ds.path).name}"
                rows.append(RunRow(index=len(rows), dataset=fit(dataset, LABEL_SIZES[0]), weighting=fit(w.label, LABEL_SIZES[1]),
                                   seed=seed, job=job))
    return rows


def _train_config(fields: dict[str, Any], *, dataset: int, weighting: int) -> TrainConfig:
    """The trainer's own config model rejects what the spec's schema cannot see; the error names the spec field."""
    try:
        return TrainConfig(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        head, *rest = err["loc"] or ("training",)
        if head == "dataset":
            loc = ("datasets", dataset, *rest)
        elif head in ("weighting", "weighting_params"):
            loc = ("weightings", weighting, *rest)
        elif head in ("preset", "learn_sigma", "class_conditional"):
            loc = ("model", head, *rest)
        else:
            loc = ("training", head, *rest)
        raise SpecError(("body", *loc), f"the trainer rejects it: {err['msg']}") from None


def fit(text: str, size: int) -> str:
    """A derived label that fits its column: cut, with a short hash of the whole kept unique."""
    if len(text) <= size:
        return text
    return text[: size - 9] + "~" + hashlib.sha256(text.encode()).hexdigest()[:8]
