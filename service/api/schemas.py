"""Response models of the API (`XRead`, `XList`): what clients get back, built from ORM rows
(`from_attributes`) or from the domain's views."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.core.lifecycle import AttemptStatus, ExperimentStatus, RunStatus


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AttemptRead(_Read):
    number: int
    status: AttemptStatus
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
    owner: str | None = Field(description="the user who submitted it (null: from before owners; only admins act on it)")
    priority: int = Field(description="higher starts first; the owner or an admin changes it (PATCH)")
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


class SpecCheck(BaseModel):
    """A spec as the service would take it, stored nowhere (`POST /experiments:validate`)."""

    spec_hash: str = Field(description="the canonical hash: the `spec_hash` of the experiment this spec creates")
    spec: dict[str, Any] = Field(description="the spec resolved (defaults filled in, folder paths normalised)")
    runs: int
    weightings: list[str] = Field(description="the leaderboard columns of its runs")
    config_hashes: list[str] = Field(description="the training setups (leaderboard tables) of its runs")


NEXT_CURSOR = "pass it back as `cursor` for the next page; null on the last page"


class ExperimentList(BaseModel):
    items: list[ExperimentSummary]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class RunList(BaseModel):
    experiment_id: str
    items: list[RunSummary]
    limit: int
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class MetricPointRead(_Read):
    step: int
    values: dict[str, Any]


class MetricsRead(BaseModel):
    run_id: str
    points: list[MetricPointRead]
    next_since_step: int | None = Field(description="pass it back as `since_step` for the next page; null on the last page")


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
    next_cursor: str | None = Field(None, description=NEXT_CURSOR)


class TokenCreated(BaseModel):
    id: str
    name: str
    token: str
