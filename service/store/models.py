"""ORM models (SQLAlchemy 2.0). Schema changes go through service/migrations."""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    """Readable, prefixed, unguessable ids: `exp_…`, `run_…`."""
    return f"{prefix}_{secrets.token_hex(8)}"


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type:
        return datetime

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, datetime: UTCDateTime}


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("exp"))
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancel_requested_at: Mapped[datetime | None]
    owner: Mapped[str | None] = mapped_column(String(100))  # users.name; None: from before owners (admins only)
    priority: Mapped[int] = mapped_column(default=0)  # higher starts first (service.domain.queue)

    runs: Mapped[list[Run]] = relationship(back_populates="experiment", order_by="Run.index")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("experiment_id", "index", name="uq_runs_experiment_index"),
        Index("ix_runs_status", "status"),
        # an index, not a constraint: SQLite adds it without rebuilding `runs` (whose rebuild would
        # cascade-delete attempts, metrics and results); NULLs (plain experiments) never collide
        Index("uq_runs_experiment_sweep_trial", "experiment_id", "sweep_trial", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("run"))
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    index: Mapped[int]
    dataset: Mapped[str] = mapped_column(String(100))
    weighting: Mapped[str] = mapped_column(String(200))  # label, e.g. "p2(gamma=1,k=1)"
    seed: Mapped[int]
    config: Mapped[dict[str, Any]]  # the resolved trainer config
    evaluation: Mapped[dict[str, Any]]
    resources: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(64))  # of config without seed: groups seeds
    status: Mapped[str] = mapped_column(String(20), default="queued")
    current_step: Mapped[int] = mapped_column(default=0)
    total_steps: Mapped[int]
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    metrics_offset: Mapped[int] = mapped_column(default=0)  # bytes of metrics.jsonl ingested
    latest_metrics: Mapped[dict[str, Any] | None]
    usage: Mapped[dict[str, Any] | None]  # device, workers, wall_s, device_hours of the training
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    sweep_trial: Mapped[str | None] = mapped_column(String(100))  # Ray Tune trial id of a sweep's run
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="runs")
    attempts: Mapped[list[Attempt]] = relationship(back_populates="run", order_by="Attempt.number")


class Attempt(Base):
    """One submission of a run to the executor. A retry resumes from the run's last checkpoint."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("run_id", "number", name="uq_attempts_run_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    number: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="running")  # running|succeeded|failed|lost|cancelled
    start_step: Mapped[int | None]  # first step this attempt trained (0 unless resumed)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    run: Mapped[Run] = relationship(back_populates="attempts")


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_metric_points_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int]
    values: Mapped[dict[str, Any]]


class Result(Base):
    """One evaluated cell: (run, training step, T, sampler, metric). Recorded once (unique).

    `train_step` is the training step of the evaluated EMA weights: the run's total_steps for the
    final checkpoint, smaller for the intermediate snapshots of `evaluation.at_steps`."""

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("run_id", "train_step", "num_steps", "sampler", "metric", name="uq_results_cell"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    train_step: Mapped[int]
    num_steps: Mapped[int]
    sampler: Mapped[str] = mapped_column(String(50))
    metric: Mapped[str] = mapped_column(String(50))
    value: Mapped[float] = mapped_column(Float)
    num_gen: Mapped[int | None]
    extractor: Mapped[str | None] = mapped_column(String(100))
    extra: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sweep(Base):
    """A Ray Tune search over an experiment spec. Its trials are the runs of `experiment_id`
    (one per Tune trial, `runs.sweep_trial`), so runs, leaderboard, pages and cancel are shared."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("swp"))
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), unique=True)
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|succeeded|failed|cancelled
    max_concurrent_trials: Mapped[int | None]  # in force: the request, capped to what the cluster fits
    best: Mapped[dict[str, Any] | None]  # trial_id, run_id, config, value, train_step
    message: Mapped[str | None] = mapped_column(Text)  # notes for the user (e.g. a capped concurrency)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    owner: Mapped[str | None] = mapped_column(String(100))

    experiment: Mapped[Experiment] = relationship()


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tok"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; never the token
    user: Mapped[str] = mapped_column(String(100))  # users.name
    scopes: Mapped[str] = mapped_column(String(100))  # space-separated: read, submit, admin
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class User(Base):
    """Whoever owns tokens and work, and their quota (None: no limit of that kind)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    max_runs: Mapped[int | None]  # concurrent runs
    max_cpus: Mapped[float | None] = mapped_column(Float)  # CPUs in use by their live runs
    max_gpus: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lease(Base):
    """The dispatcher's lease (one row, name "dispatcher"): `token` goes up by one at every
    takeover and every dispatcher write checks it (a fencing token), so a paused ex-leader
    cannot write once another replica holds the lease. Times are epoch seconds."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))  # a replica id
    token: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class Replica(Base):
    """A `snrlab serve` process on this database, seen at its last heartbeat (epoch seconds)."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    version: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[float] = mapped_column(Float)
    seen_at: Mapped[float] = mapped_column(Float)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(40), primary_key=True)  # token id (or "anonymous")
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ResultsVersion(Base):
    """One row (id 1) whose `version` the database's own triggers move on every change the
    leaderboard can see (migration 0005): a leaderboard cached under a version is valid exactly
    while it stands."""

    __tablename__ = "results_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
