"""The rows behind the leaderboard: one per evaluated cell of a succeeded run, as plain columns."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.lifecycle import RunStatus
from service.store.models import Experiment, Result, ResultsVersion, Run


@dataclass(frozen=True)
class ResultRow:
    dataset: str
    config_hash: str
    train_step: int
    num_steps: int
    metric: str
    sampler: str
    extractor_fingerprint: str | None
    ref_key: str | None
    weighting: str  # the run's label (its leaderboard column)
    weighting_name: str  # the weighting itself, the label's name part
    seed: int
    value: float
    num_gen: int | None
    extractor: str | None
    run_id: str
    experiment_id: str
    code_version: str
    floor: float | None = None  # the evaluator's floor of this metric at this N (held-out real images)


def result_rows(session: Session, *, dataset: str | None = None, metric: str | None = None, sampler: str | None = None,
                experiment_id: str | None = None, final_only: bool = True) -> Iterator[ResultRow]:
    """Succeeded runs' results; `final_only` keeps the final checkpoint's (train_step = total_steps).
    Plain columns, not Result entities: building 10,000 ORM objects (identity map, JSON decode of
    `extra`) was ~90% of a request (benchmarks/leaderboard_load.py); the keys read from JSON are
    extracted by the database (json_extract on SQLite, ->> on PostgreSQL)."""
    q = (
        select(Run.dataset, Run.config_hash, Result.train_step, Result.num_steps, Result.metric, Result.sampler,
               Result.extra["extractor_fingerprint"].as_string(), Result.extra["ref_key"].as_string(),
               Run.weighting, Run.config["weighting"].as_string(), Run.seed, Result.value, Result.num_gen,
               Result.extractor, Result.run_id, Run.experiment_id, Experiment.code_version,
               Result.extra["floor"].as_float())
        .select_from(Result)
        .join(Run, Result.run_id == Run.id)
        .join(Experiment, Run.experiment_id == Experiment.id)
        .where(Run.status == RunStatus.SUCCEEDED.value)
    )
    if final_only:
        q = q.where(Result.train_step == Run.total_steps)
    if dataset:
        q = q.where(Run.dataset == dataset)
    if metric:
        q = q.where(Result.metric == metric)
    if sampler:
        q = q.where(Result.sampler == sampler)
    if experiment_id:
        q = q.where(Run.experiment_id == experiment_id)
    for row in session.execute(q):
        yield ResultRow(*row)


def filter_options(session: Session) -> dict[str, list[str]]:
    """The values the leaderboard can be filtered by (the page's select boxes)."""
    rows = session.execute(select(Run.dataset, Result.metric, Result.sampler, Run.experiment_id)
                           .join(Run, Result.run_id == Run.id).distinct()).all()
    return {k: sorted({r[i] for r in rows}) for i, k in enumerate(("dataset", "metric", "sampler", "experiment"))}


_VERSION = select(ResultsVersion.version).where(ResultsVersion.id == 1)  # built once: every cached read runs it


def results_version(session: Session) -> int | None:
    """The counter the database moves on every change the leaderboard can see (None: no counter row)."""
    return session.connection().execute(_VERSION).scalar()
