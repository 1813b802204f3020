"""Persistence operations: keyword-only functions over a Session, no HTTP types.

Callers own the transaction (commit/rollback); nothing here commits."""
from __future__ import annotations

import hashlib
import math
import secrets
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from service.domain import spec as schemas
from service.core.errors import AuthError, ConflictError, NotFoundError, SpecError
from service.core.lifecycle import RunStatus, check_transition, experiment_status
from service.store.models import ApiToken, Experiment, IdempotencyKey, MetricPoint, Result, Run, utcnow


# ---------------------------------------------------------------- experiments
DATASET_LABEL = Run.__table__.c.dataset.type.length  # runs.dataset VARCHAR(100)
WEIGHTING_LABEL = Run.__table__.c.weighting.type.length  # runs.weighting VARCHAR(200)


def check_data_roots(spec: schemas.ExperimentSpec, *, data_roots: Iterable[Path]) -> schemas.ExperimentSpec:
    """A dataset `path` (folder, cifar10) may only read below one of SNRLAB_DATA_ROOTS. The returned
    spec carries the normalised paths (`normalise_path`), so the trainer reads what was checked."""
    datasets = [ds if ds.path is None else
                ds.model_copy(update={"path": normalise_path(ds.path, data_roots=data_roots, loc=("body", "datasets", i, "path"))})
                for i, ds in enumerate(spec.datasets)]
    return spec.model_copy(update={"datasets": datasets})


def normalise_path(given: str, *, data_roots: Iterable[Path], loc: tuple[str | int, ...]) -> str:
    """The path exactly as the reader will see it: `~` expanded (the trainer expands it too),
    absolute (a relative path would be read from a Ray worker's directory, not this one), symlinks
    resolved; SpecError unless it lies below one of the roots (resolved the same way)."""
    roots = [Path(r).expanduser().resolve() for r in data_roots]
    path = Path(given).expanduser()
    if not path.is_absolute():
        raise SpecError(loc, f"folder {given!r} must be an absolute path (or start with ~)")
    try:
        path = path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a name too long
        raise SpecError(loc, f"folder {given!r} cannot be resolved: {e}") from None
    if not any(path == r or path.is_relative_to(r) for r in roots):
        allowed = ", ".join(map(str, roots)) or "none configured"
        raise SpecError(loc, f"folder {given!r} ({path}) is outside SNRLAB_DATA_ROOTS ({allowed})")
    return str(path)


def fit(text: str, size: int) -> str:
    """A derived label that fits its column: cut, with a short hash of the whole kept unique."""
    if len(text) <= size:
        return text
    return text[: size - 9] + "~" + hashlib.sha256(text.encode()).hexdigest()[:8]


def expand_runs(spec: schemas.ExperimentSpec, *, checkpoint_every: int | None = None) -> list[dict[str, Any]]:
    """dataset x weighting x seed -> one dict of Run columns each; `config` is the trainer's config."""
    runs = []
    for ds in spec.datasets:
        for w in spec.weightings:
            for seed in spec.training.seeds:
                t = spec.training
                config: dict[str, Any] = {
                    "dataset": ds.model_dump(exclude_none=True),
                    "weighting": w.name,
                    "weighting_params": w.params,
                    "target": t.target,
                    "schedule": t.schedule,
                    "num_timesteps": t.num_timesteps,
                    "preset": spec.model.preset,
                    "learn_sigma": spec.model.learn_sigma,
                    "steps": t.steps,
                    "batch_size": t.batch_size,
                    "lr": t.lr,
                    "ema": t.ema,
                    "seed": seed,
                }
                if t.checkpoint_every or checkpoint_every:
                    config["checkpoint_every"] = t.checkpoint_every or checkpoint_every
                if spec.evaluation.at_steps:
                    config["snapshot_steps"] = list(spec.evaluation.at_steps)
                setup = {k: v for k, v in config.items()
                         if k not in ("seed", "weighting", "weighting_params", "checkpoint_every", "snapshot_steps")}
                # which intermediate checkpoints are evaluated does not change a final result
                setup["evaluation"] = spec.evaluation.model_dump(mode="json", exclude={"at_steps"})
                runs.append(
                    dict(
                        index=len(runs),
                        dataset=fit(ds.name if ds.path is None else f"{ds.name}:{Path(ds.path).name}", DATASET_LABEL),
                        weighting=fit(w.label, WEIGHTING_LABEL),
                        seed=seed,
                        config=config,
                        evaluation=spec.evaluation.model_dump(mode="json"),
                        resources=spec.resources.model_dump(mode="json"),
                        config_hash=schemas.sha256_json(setup)[:16],
                        total_steps=t.steps,
                    )
                )
    return runs


def validate_train_config(config: dict[str, Any], *, index: int) -> None:
    """Let the trainer's own config model reject what the spec schema cannot see."""
    try:
        from trainer.config import TrainConfig
    except ImportError:  # pragma: no cover - trainer always ships with the service
        return
    from pydantic import ValidationError

    try:
        TrainConfig(**config)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ("body", "runs", index, *err["loc"])
        raise SpecError(loc, f"trainer rejected run {index}: {err['msg']}") from None


def create_experiment(
    session: Session,
    *,
    spec: schemas.ExperimentSpec,
    code_version: str,
    checkpoint_every: int | None = None,
    idempotency_scope: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Experiment, bool]:
    """Insert the experiment and all its runs (one transaction: all or nothing).

    Returns (experiment, created). With an idempotency key already used for the same body,
    returns the original experiment; for another body raises ConflictError. A concurrent
    insert of the same key surfaces as IntegrityError at flush: the caller rolls back and
    calls `replay_idempotent`."""
    spec_hash = spec.canonical_hash()
    if idempotency_key is not None:
        replay = replay_idempotent(session, scope=idempotency_scope or "anonymous", key=idempotency_key, request_hash=spec_hash)
        if replay is not None:
            return replay, False
    run_rows = expand_runs(spec, checkpoint_every=checkpoint_every)
    for row in run_rows:
        validate_train_config(row["config"], index=row["index"])
    exp = Experiment(name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=spec_hash, code_version=code_version)
    exp.runs = [Run(status=RunStatus.QUEUED.value, **row) for row in run_rows]
    session.add(exp)
    session.flush()
    if idempotency_key is not None:
        session.add(
            IdempotencyKey(scope=idempotency_scope or "anonymous", key=idempotency_key, request_hash=spec_hash, experiment_id=exp.id)
        )
        session.flush()
    return exp, True


def replay_idempotent(session: Session, *, scope: str, key: str, request_hash: str) -> Experiment | None:
    row = session.get(IdempotencyKey, (scope, key))
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise ConflictError(f"Idempotency-Key {key!r} was already used with a different body")
    return get_experiment(session, experiment_id=row.experiment_id)


def get_experiment(session: Session, *, experiment_id: str) -> Experiment:
    exp = session.scalar(
        select(Experiment).where(Experiment.id == experiment_id).options(selectinload(Experiment.runs))
    )
    if exp is None:
        raise NotFoundError(f"experiment {experiment_id!r} not found")
    return exp


def list_experiments(session: Session, *, limit: int = 50, offset: int = 0) -> tuple[list[Experiment], int]:
    total = session.scalar(select(func.count()).select_from(Experiment)) or 0
    rows = session.scalars(
        select(Experiment)
        .options(selectinload(Experiment.runs))
        .order_by(Experiment.created_at.desc(), Experiment.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def cancel_experiment(session: Session, *, experiment_id: str) -> Experiment:
    """Queued runs are cancelled now; live runs are flagged for the dispatcher, which stops
    their Ray work and then marks them cancelled. Cancelling a finished experiment is a no-op."""
    exp = get_experiment(session, experiment_id=experiment_id)
    if exp.cancel_requested_at is None:
        exp.cancel_requested_at = utcnow()
    for run in exp.runs:
        status = RunStatus(run.status)
        if status is RunStatus.QUEUED:
            transition_run(session, run=run, to=RunStatus.CANCELLED, error=None)
        elif not status.is_terminal():
            run.cancel_requested = True
    session.flush()
    return exp


def experiment_view(exp: Experiment) -> dict[str, Any]:
    """Fields derived from the runs: status, progress, finished_at."""
    states = [RunStatus(r.status) for r in exp.runs]
    status = experiment_status(states)
    by_status: dict[str, int] = defaultdict(int)
    for s in states:
        by_status[s.value] += 1
    planned = sum(r.total_steps for r in exp.runs) or 1
    done = sum(r.total_steps if RunStatus(r.status) in (RunStatus.EVALUATING, RunStatus.SUCCEEDED) else min(r.current_step, r.total_steps) for r in exp.runs)
    finished = [r.finished_at for r in exp.runs if r.finished_at is not None]
    return dict(
        id=exp.id,
        name=exp.name,
        status=status,
        created_at=exp.created_at,
        finished_at=max(finished) if status.is_terminal() and finished else None,
        progress=schemas.Progress(runs=len(states), by_status=dict(by_status), fraction=round(done / planned, 4)),
        run_ids=[r.id for r in exp.runs],
        runs=[schemas.RunSummary.model_validate(r) for r in exp.runs],
        cancel_requested_at=exp.cancel_requested_at,
        spec=exp.spec,
        spec_hash=exp.spec_hash,
        code_version=exp.code_version,
    )


# ---------------------------------------------------------------- runs
def get_run(session: Session, *, run_id: str) -> Run:
    run = session.scalar(select(Run).where(Run.id == run_id).options(selectinload(Run.attempts)))
    if run is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return run


def transition_run(session: Session, *, run: Run, to: RunStatus, **fields: Any) -> Run:
    """The only way a run changes state: checked against the table; terminal states are stamped."""
    check_transition(RunStatus(run.status), to)
    run.status = to.value
    for k, v in fields.items():
        setattr(run, k, v)
    now = utcnow()
    if to is RunStatus.TRAINING and run.started_at is None:
        run.started_at = now
    if to.is_terminal():
        run.finished_at = now
        run.cancel_requested = False
    return run


def get_metrics(session: Session, *, run_id: str, since_step: int = -1, limit: int = 10_000) -> list[MetricPoint]:
    get_run(session, run_id=run_id)
    return list(
        session.scalars(
            select(MetricPoint)
            .where(MetricPoint.run_id == run_id, MetricPoint.step > since_step)
            .order_by(MetricPoint.step)
            .limit(limit)
        )
    )


def upsert_metrics(session: Session, *, run_id: str, points: list[dict[str, Any]]) -> None:
    """Idempotent by (run, step): a resumed attempt re-logging a step overwrites, never duplicates."""
    if not points:
        return
    by_step = {int(p["step"]): p for p in points}
    rows = [{"run_id": run_id, "step": s, "values": v} for s, v in sorted(by_step.items())]
    dialect = session.get_bind().dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(MetricPoint)
    stmt = ins.values(rows)
    stmt = stmt.on_conflict_do_update(index_elements=["run_id", "step"], set_={"values": stmt.excluded["values"]})
    session.execute(stmt)


def get_results(session: Session, *, run_id: str) -> tuple[Run, list[Result]]:
    run = get_run(session, run_id=run_id)
    rows = session.scalars(
        select(Result).where(Result.run_id == run_id)
        .order_by(Result.metric, Result.sampler, Result.train_step, Result.num_steps)
    ).all()
    return run, list(rows)


def record_results(session: Session, *, run_id: str, results: list[dict[str, Any]], default_train_step: int | None = None) -> int:
    """Insert evaluated cells once; cells already recorded (a replay after restart, or the
    intermediate results seen while training) are kept. A row without `train_step` is of the
    final checkpoint (`default_train_step`, the run's total_steps)."""
    if default_train_step is None:
        default_train_step = session.scalar(select(Run.total_steps).where(Run.id == run_id))
    existing = set(
        session.execute(
            select(Result.train_step, Result.num_steps, Result.sampler, Result.metric).where(Result.run_id == run_id)
        ).all()
    )
    added = 0
    for r in results:
        key = (int(r.get("train_step") or default_train_step), int(r["num_steps"]), str(r["sampler"]), str(r["metric"]))
        if key in existing:
            continue
        existing.add(key)
        extra = {k: v for k, v in r.items()
                 if k not in ("train_step", "num_steps", "sampler", "metric", "value", "num_gen", "extractor")}
        session.add(
            Result(run_id=run_id, train_step=key[0], num_steps=key[1], sampler=key[2], metric=key[3], value=float(r["value"]),
                   num_gen=r.get("num_gen"), extractor=r.get("extractor"), extra=extra or None)
        )
        added += 1
    session.flush()
    return added


# ---------------------------------------------------------------- leaderboard
def leaderboard(
    session: Session, *, dataset: str | None = None, metric: str | None = None, sampler: str | None = None,
    lower_is_better: bool = True, experiment_id: str | None = None, train_steps: str = "final",
) -> schemas.Leaderboard:
    """Rows (dataset, setup, training step, T) x columns (weighting): mean/std/n over seeds of
    succeeded runs. train_steps="final" keeps the final checkpoints only (the paper's tables);
    "all" adds the intermediate ones (`evaluation.at_steps`, the paper's Fig. 7a)."""
    # Plain columns, not Result entities: building 10,000 ORM objects (identity map, JSON decode
    # of `extra`) was ~90% of a request (benchmarks/leaderboard_load.py). The two keys read from
    # `extra` are extracted by the database (json_extract on SQLite, ->> on PostgreSQL).
    q = (
        select(Run.dataset, Run.config_hash, Result.train_step, Result.num_steps, Result.metric, Result.sampler,
               Result.extra["extractor_fingerprint"].as_string(), Result.extra["ref_key"].as_string(),
               Run.weighting, Result.value, Result.num_gen, Result.extractor, Result.run_id,
               Run.experiment_id, Experiment.code_version)
        .select_from(Result)
        .join(Run, Result.run_id == Run.id)
        .join(Experiment, Run.experiment_id == Experiment.id)
        .where(Run.status == RunStatus.SUCCEEDED.value)
    )
    if train_steps == "final":
        q = q.where(Result.train_step == Run.total_steps)
    if dataset:
        q = q.where(Run.dataset == dataset)
    if metric:
        q = q.where(Result.metric == metric)
    if sampler:
        q = q.where(Result.sampler == sampler)
    if experiment_id:
        q = q.where(Run.experiment_id == experiment_id)
    cells: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    exp_ids, hashes, versions, columns = set(), set(), set(), set()
    for (ds, chash, train_step, t, row_metric, row_sampler, fp, ref, weighting, value, num_gen, extractor, run_id,
         exp_id, version) in session.execute(q):
        # comparable cells share the feature extractor and the reference set (evaluator contract)
        row_key = (ds, chash, train_step, t, row_metric, row_sampler, fp or "", ref or "")
        cells[row_key][weighting].append((value, num_gen, extractor, run_id))
        exp_ids.add(exp_id)
        hashes.add(chash)
        versions.add(version)
        columns.add(weighting)
    rows = []
    for (ds, chash, train_step, t, row_metric, row_sampler, fp, _ref), by_w in sorted(cells.items()):
        row_cells = {}
        for w, rs in by_w.items():
            vals = [r[0] for r in rs]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            row_cells[w] = schemas.LeaderboardCell(
                mean=mean, std=std, n=len(vals), num_gen=rs[0][1], extractor=rs[0][2], best=False,
                run_ids=sorted(r[3] for r in rs),
            )
        pick = min if lower_is_better else max
        best = pick(row_cells, key=lambda w: row_cells[w].mean) if row_cells else None
        if best is not None:
            row_cells[best].best = True
        rows.append(schemas.LeaderboardRow(dataset=ds, train_step=train_step, num_steps=t, metric=row_metric, sampler=row_sampler,
                                           extractor_fingerprint=fp or None,
                                           config_hash=chash, cells=row_cells, best=best))
    return schemas.Leaderboard(
        train_steps=train_steps, metric=metric, sampler=sampler, dataset=dataset, lower_is_better=lower_is_better,
        columns=sorted(columns), rows=rows,
        provenance=schemas.Provenance(experiment_ids=sorted(exp_ids), config_hashes=sorted(hashes), code_versions=sorted(versions)),
    )


# ---------------------------------------------------------------- tokens
TOKEN_PREFIX = "snr_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, name: str) -> tuple[ApiToken, str]:
    """Returns (row, token): the token itself is never stored, only its sha256."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token))
    session.add(row)
    session.flush()
    return row, token


def verify_token(session: Session, *, token: str) -> ApiToken:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)))
    if row is None:
        raise AuthError("invalid or revoked API token")
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke_token(session: Session, *, token_id: str) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"token {token_id!r} not found")
    row.revoked_at = row.revoked_at or utcnow()
    return row

