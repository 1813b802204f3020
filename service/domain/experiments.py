"""Experiments: a spec in, its runs queued (all or nothing), cancel and priority (its owner's or an
admin's, service.domain.ownership), and the state derived from the runs. The folder a dataset reads is checked against SNRLAB_DATA_ROOTS exactly as the reader
will see it."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service.core.errors import SpecError
from service.core.lifecycle import RunStatus, experiment_status, transition, utcnow
from service.domain.jobs import expand_runs
from service.domain.ownership import Principal, require_owner
from service.domain.spec import ExperimentSpec
from service.store import experiments as store
from service.store.models import Experiment


# Priorities: higher starts first. Bounded so that a number is a rank among a team's work, not a
# race to the largest integer; 0 is everyone's default.
MIN_PRIORITY, MAX_PRIORITY = -100, 100


def create_experiment(session: Session, *, spec: ExperimentSpec, code_version: str, checkpoint_every: int | None = None,
                      idempotency_scope: str | None = None, idempotency_key: str | None = None,
                      owner: str | None = None, priority: int = 0) -> tuple[Experiment, bool]:
    """Insert the experiment and all its runs (one transaction: all or nothing), owned by `owner`.

    Returns (experiment, created). With an idempotency key already used for the same body,
    returns the original experiment (with its own priority: priority is no part of the body's
    hash, a repeat does not change it); for another body raises ConflictError. A concurrent
    insert of the same key surfaces as IntegrityError at flush: the caller rolls back and
    calls `store.experiments.replay_idempotent`."""
    spec_hash = spec.canonical_hash()
    rows = expand_runs(spec, checkpoint_every=checkpoint_every)  # before the first statement: SQLite's write lock
    if idempotency_key is not None:
        replay = store.replay_idempotent(session, scope=idempotency_scope or "anonymous", key=idempotency_key,
                                         request_hash=spec_hash)
        if replay is not None:
            return replay, False
    exp = store.insert_experiment(session, name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=spec_hash,
                                  code_version=code_version, runs=[r.columns for r in rows],
                                  idempotency_scope=idempotency_scope, idempotency_key=idempotency_key,
                                  owner=owner, priority=priority)
    return exp, True


def cancel_experiment(session: Session, *, experiment_id: str, by: Principal | None = None) -> Experiment:
    """Queued runs are cancelled now; live runs are flagged for the dispatcher, which stops
    their Ray work and then marks them cancelled. Cancelling a finished experiment is a no-op.
    `by`: the caller, who must own it or be an admin (None: the service itself, e.g. a sweep's cancel)."""
    exp = store.get_experiment(session, experiment_id=experiment_id)
    if by is not None:
        require_owner(by, exp.owner, f"experiment {exp.id}", action="cancel")
    if exp.cancel_requested_at is None:
        exp.cancel_requested_at = utcnow()
    for run in exp.runs:
        status = RunStatus(run.status)
        if status is RunStatus.QUEUED:
            transition(run, RunStatus.CANCELLED, error=None)
        elif not status.is_terminal():
            run.cancel_requested = True
    session.flush()
    return exp


def set_priority(session: Session, *, experiment_id: str, priority: int, by: Principal | None = None) -> Experiment:
    """A new priority (its owner's or an admin's call): it orders the experiment's runs that are
    still queued against everyone else's (service.domain.queue)."""
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise SpecError(("body", "priority"), f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {priority}")
    exp = store.get_experiment(session, experiment_id=experiment_id)
    if by is not None:
        require_owner(by, exp.owner, f"experiment {exp.id}", action="reprioritise")
    exp.priority = priority
    session.flush()
    return exp


def run_progress(run: Any) -> int:
    """Steps trained, as the page and the API count them (a run past training counts whole)."""
    if RunStatus(run.status) in (RunStatus.EVALUATING, RunStatus.SUCCEEDED):
        return run.total_steps
    return min(run.current_step, run.total_steps)


def experiment_view(exp: Experiment) -> dict[str, Any]:
    """The experiment with what is derived from its runs: status, progress, finished_at."""
    states = [RunStatus(r.status) for r in exp.runs]
    status = experiment_status(states)
    by_status: dict[str, int] = defaultdict(int)
    for s in states:
        by_status[s.value] += 1
    planned = sum(r.total_steps for r in exp.runs) or 1
    done = sum(run_progress(r) for r in exp.runs)
    finished = [r.finished_at for r in exp.runs if r.finished_at is not None]
    return dict(
        id=exp.id, name=exp.name, status=status, owner=exp.owner, priority=exp.priority, created_at=exp.created_at,
        finished_at=max(finished) if status.is_terminal() and finished else None,
        progress=dict(runs=len(states), by_status=dict(by_status), fraction=round(done / planned, 4)),
        run_ids=[r.id for r in exp.runs], runs=list(exp.runs), cancel_requested_at=exp.cancel_requested_at,
        spec=exp.spec, spec_hash=exp.spec_hash, code_version=exp.code_version,
    )


# ---------------------------------------------------------------- data roots
def check_data_roots(spec: ExperimentSpec, *, data_roots: Iterable[Path]) -> ExperimentSpec:
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
