"""Sweeps in the domain: a sweep is an Experiment (runs, leaderboard, pages and cancel are shared)
plus a `sweeps` row; its trials are runs of that experiment, one per Ray Tune trial (inserted
idempotently by trial id). Here: creating, cancelling and finishing sweeps, a trial's run, the
views (trials, the best configuration) and how many trials fit the cluster at once.

Functions follow the store's rules: keyword-only, callers own the transaction."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from service.core.errors import ConflictError, SpecError
from service.core.lifecycle import RunStatus, SweepStatus, transition
from service.domain.experiments import cancel_experiment
from service.domain.ownership import Principal, require_owner
from service.domain.spec import sha256_json
from service.domain.sweep_spec import (
    T_SAMPLING_PARAM,
    WEIGHTING_PARAM,
    SweepSpec,
    trial_run_row,
)
from service.store.models import Experiment, Result, Run, Sweep
from service.store.sweeps import get_sweep


# ---------------------------------------------------------------- views
class SweepTrial(BaseModel):
    trial_id: str | None
    run_id: str
    status: str
    config: dict[str, Any] = Field(description="the sampled point, read back from the run")
    value: float | None = Field(description="the latest value of the sweep's metric")
    train_step: int | None = Field(description="training step of that value (total_steps: final)")
    current_step: int
    total_steps: int
    error: str | None


class SweepSummary(BaseModel):
    id: str
    experiment_id: str
    name: str
    status: SweepStatus
    owner: str | None = Field(description="the user who started it (null: from before owners; only admins act on it)")
    priority: int = Field(description="its experiment's: higher starts first (PATCH /experiments/{experiment_id})")
    metric: str
    mode: str
    best: dict[str, Any] | None = Field(description="trial_id, run_id, config, value, train_step of the best final result")
    created_at: datetime
    finished_at: datetime | None


class SweepRead(SweepSummary):
    spec: dict[str, Any]
    max_concurrent_trials: int | None = Field(description="in force: the request capped to what the cluster fits")
    message: str | None
    error: str | None
    trials: list[SweepTrial]


class SweepList(BaseModel):
    items: list[SweepSummary]
    total: int
    limit: int
    offset: int
    next_cursor: str | None = Field(description="pass it back as `cursor` for the next page; null on the last page")


class SweepStopped(ConflictError):
    """A trial of a cancelled or finished sweep asked for a run."""


# ---------------------------------------------------------------- resources
def concurrency(spec: SweepSpec, *, capacity: int, max_concurrent_runs: int | None) -> tuple[int, str | None]:
    """(trials at once, note). Refuses a sweep none of whose runs could ever start (422); caps a
    request above what the cluster fits, so Tune never has trials waiting on runs that cannot run."""
    res = spec.base.resources
    if capacity < 1:
        gpus = f" and {res.gpus_per_worker * res.workers_per_run:g} GPU(s)" if res.gpus_per_worker else ""
        raise SpecError(("body", "base", "resources"),
                        f"a trial's run needs {res.workers_per_run} CPU(s){gpus} at once and the Ray cluster has fewer in "
                        "total: no trial could ever start (lower base.resources.workers_per_run / gpus_per_worker)")
    fits = min(capacity, max_concurrent_runs or capacity)
    wanted = spec.max_concurrent_trials or fits
    if wanted <= fits:
        return wanted, None
    why = "SNRLAB_MAX_CONCURRENT_RUNS" if max_concurrent_runs and max_concurrent_runs < capacity else \
        f"the cluster fits {capacity} run(s) of {res.workers_per_run} worker(s) at once"
    return fits, f"max_concurrent_trials capped from {wanted} to {fits}: {why}"


# ---------------------------------------------------------------- persistence
def create_sweep(session: Session, *, spec: SweepSpec, code_version: str, max_concurrent_trials: int | None = None,
                 message: str | None = None, owner: str | None = None, priority: int = 0) -> Sweep:
    """The sweep and its (empty) experiment, both owned by `owner`, the experiment at `priority`
    (its trials' runs queue at it); trials add runs as Tune starts them."""
    base = spec.base.model_dump(mode="json")
    base["name"] = spec.experiment_name
    body = spec.model_dump(mode="json")
    body["search_space"] = {k: d.model_dump(mode="json", exclude_none=True) for k, d in spec.search_space.items()}
    exp = Experiment(name=spec.experiment_name, spec=base, spec_hash=sha256_json(body), code_version=code_version,
                     owner=owner, priority=priority)
    sweep = Sweep(experiment=exp, spec=body, status=SweepStatus.QUEUED.value, max_concurrent_trials=max_concurrent_trials,
                  message=message, owner=owner)
    session.add_all([exp, sweep])
    session.flush()
    return sweep


def finish_sweep(sweep: Sweep, *, status: SweepStatus, error: str | None = None) -> None:
    """The sweep ends (a no-op once it has): succeeded, failed or cancelled, with the reason."""
    if SweepStatus(sweep.status).is_terminal():
        return
    transition(sweep, status, **({"error": error} if error is not None else {}))


def cancel_sweep(session: Session, *, sweep_id: str, by: Principal | None = None) -> Sweep:
    """Queued trial runs are cancelled now, live ones flagged for the dispatcher; the manager
    kills the Tune actor. The sweep row is locked, so no trial can add a run after this.
    `by`: the caller, who must own the sweep or be an admin (None: the service itself)."""
    sweep = get_sweep(session, sweep_id=sweep_id, for_update=True)
    if by is not None:
        require_owner(by, sweep.owner, f"sweep {sweep.id}", action="cancel")
    if not SweepStatus(sweep.status).is_terminal():
        finish_sweep(sweep, status=SweepStatus.CANCELLED)
        cancel_experiment(session, experiment_id=sweep.experiment_id)
    session.flush()
    return sweep


def ensure_trial_run(session: Session, *, sweep_id: str, trial_id: str, point: dict[str, Any],
                     checkpoint_every: int | None = None) -> str:
    """The run of a Tune trial, inserted queued on first call. Idempotent by (experiment, trial id):
    a restored trial re-attaches to its run (which the dispatcher resumed or finished)."""
    sweep = get_sweep(session, sweep_id=sweep_id, for_update=True)  # serializes trials of one sweep
    run_id = session.scalar(select(Run.id).where(Run.experiment_id == sweep.experiment_id, Run.sweep_trial == trial_id))
    if run_id is not None:
        return run_id
    exp = session.get(Experiment, sweep.experiment_id)
    if SweepStatus(sweep.status).is_terminal() or exp.cancel_requested_at is not None:
        raise SweepStopped(f"sweep {sweep_id} is {sweep.status}; trial {trial_id} gets no run")
    row = trial_run_row(SweepSpec.model_validate(sweep.spec), point, checkpoint_every=checkpoint_every)
    index = session.scalar(select(func.coalesce(func.max(Run.index) + 1, 0)).where(Run.experiment_id == exp.id))
    run = Run(experiment_id=exp.id, status=RunStatus.QUEUED.value, sweep_trial=trial_id, **{**row.columns, "index": index})
    session.add(run)
    session.flush()
    return run.id


def stop_trial_run(session: Session, *, experiment_id: str, trial_id: str, reason: str) -> bool:
    """Tune stopped a trial (ASHA, or the trial failed) whose run is still going: stop the run too."""
    run = session.scalar(
        select(Run).where(Run.experiment_id == experiment_id, Run.sweep_trial == trial_id).with_for_update()
    )
    if run is None or RunStatus(run.status).is_terminal():
        return False
    if run.status == RunStatus.QUEUED.value:
        transition(run, RunStatus.CANCELLED, error=reason)
    else:
        run.cancel_requested, run.error = True, reason
    session.flush()
    return True


# ---------------------------------------------------------------- views
def run_point(run: Run, keys: list[str]) -> dict[str, Any]:
    """The sampled point of a trial, read back from its run: its labels and its resolved config."""
    cfg = run.config
    out: dict[str, Any] = {}
    for key in keys:
        if key in ("weighting", "dataset", "seed"):
            out[key] = getattr(run, key)
        elif key.startswith(WEIGHTING_PARAM):
            out[key] = (cfg.get("weighting_params") or {}).get(key[len(WEIGHTING_PARAM):])
        elif key.startswith(T_SAMPLING_PARAM):
            out[key] = (cfg.get("t_sampling_params") or {}).get(key[len(T_SAMPLING_PARAM):])
        else:
            out[key] = cfg.get(key)
    return out


def _metric_values(session: Session, spec: dict[str, Any], run_ids: list[str]) -> dict[str, list[tuple[int, float]]]:
    rows = session.execute(
        select(Result.run_id, Result.train_step, Result.value)
        .where(Result.run_id.in_(run_ids), Result.metric == spec["metric"], Result.num_steps == spec["num_steps"],
               Result.sampler == spec["sampler"])
        .order_by(Result.train_step)
    ).all() if run_ids else []
    out: dict[str, list[tuple[int, float]]] = {}
    for run_id, step, value in rows:
        out.setdefault(run_id, []).append((step, value))
    return out


def trial_runs(session: Session, sweep: Sweep) -> dict[str, dict[str, Any]]:
    """Each trial's run as its Tune trial follows it: state, error, the sweep metric's values by
    training step; `stopping` once a stop has been applied (cancel requested, or already over)."""
    runs = session.scalars(select(Run).where(Run.experiment_id == sweep.experiment_id, Run.sweep_trial.is_not(None))).all()
    values = _metric_values(session, sweep.spec, [r.id for r in runs])
    return {r.sweep_trial: dict(run_id=r.id, status=r.status, error=r.error, total_steps=r.total_steps,
                                values=values.get(r.id, []), stopping=r.cancel_requested or RunStatus(r.status).is_terminal())
            for r in runs}


def trials(session: Session, sweep: Sweep) -> list[SweepTrial]:
    runs = session.scalars(select(Run).where(Run.experiment_id == sweep.experiment_id).order_by(Run.index)).all()
    values = _metric_values(session, sweep.spec, [r.id for r in runs])
    keys = list(sweep.spec["search_space"])
    out = []
    for r in runs:
        last = values.get(r.id, [])[-1:] or [(None, None)]
        out.append(SweepTrial(trial_id=r.sweep_trial, run_id=r.id, status=r.status, config=run_point(r, keys),
                              value=last[0][1], train_step=last[0][0], current_step=r.current_step,
                              total_steps=r.total_steps, error=r.error))
    return out


def best_trial(session: Session, sweep: Sweep) -> dict[str, Any] | None:
    """The best final result (train_step == total_steps) among succeeded trial runs."""
    spec = sweep.spec
    runs = session.scalars(
        select(Run).where(Run.experiment_id == sweep.experiment_id, Run.status == RunStatus.SUCCEEDED.value)
    ).all()
    values = _metric_values(session, spec, [r.id for r in runs])
    finals = [(v, r) for r in runs for step, v in values.get(r.id, []) if step == r.total_steps and math.isfinite(v)]
    if not finals:
        return None
    pick = min if spec["mode"] == "min" else max
    value, run = pick(finals, key=lambda vr: vr[0])
    return dict(trial_id=run.sweep_trial, run_id=run.id, config=run_point(run, list(spec["search_space"])),
                value=value, train_step=run.total_steps, metric=spec["metric"], num_steps=spec["num_steps"],
                sampler=spec["sampler"], weighting=run.weighting, dataset=run.dataset, seed=run.seed)


def sweep_summary(sweep: Sweep) -> dict[str, Any]:
    return dict(id=sweep.id, experiment_id=sweep.experiment_id, name=sweep.experiment.name, status=sweep.status,
                owner=sweep.owner, priority=sweep.experiment.priority, metric=sweep.spec["metric"], mode=sweep.spec["mode"], best=sweep.best, created_at=sweep.created_at,
                finished_at=sweep.finished_at)


def sweep_view(session: Session, sweep: Sweep) -> SweepRead:
    return SweepRead(**sweep_summary(sweep), spec=sweep.spec, max_concurrent_trials=sweep.max_concurrent_trials,
                     message=sweep.message, error=sweep.error, trials=trials(session, sweep))


def summary_view(sweep: Sweep) -> SweepSummary:
    return SweepSummary(**sweep_summary(sweep))


def trial_failures(session: Session, sweep: Sweep) -> str | None:
    runs = session.scalars(select(Run).where(Run.experiment_id == sweep.experiment_id,
                                             Run.status.in_((RunStatus.FAILED.value, RunStatus.CANCELLED.value)))
                           .options(selectinload(Run.attempts))).all()
    if not runs:
        return None
    failed = [r for r in runs if r.status == RunStatus.FAILED.value]
    parts = []
    if failed:
        parts.append(f"{len(failed)} trial run(s) failed (first: {failed[0].id}: {failed[0].error})")
    stopped = len(runs) - len(failed)
    if stopped:
        parts.append(f"{stopped} trial run(s) stopped early or cancelled")
    return "; ".join(parts)
