from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import Field
from sqlalchemy.exc import IntegrityError

from service.api.deps import Cursor, ExperimentId, Offset, Priority, ReaderDep, SessionDep, SettingsDep, WriterDep
from service.api.errors import ERROR_RESPONSES
from service.api.schemas import (
    ExperimentList,
    ExperimentRead,
    ExperimentSummary,
    RunList,
    SpecCheck,
)
from service.domain import experiments, limits
from service.domain.experiments import MAX_PRIORITY, MIN_PRIORITY
from service.domain.jobs import expand_runs
from service.domain.spec import ExperimentSpec, RequestModel
from service.store import experiments as store

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=ERROR_RESPONSES)


class PriorityChange(RequestModel):
    priority: int = Field(ge=MIN_PRIORITY, le=MAX_PRIORITY, description="higher starts first")


def _accept(spec: ExperimentSpec, request: Request, settings) -> ExperimentSpec:
    """Everything a spec is refused for beyond its schema: folders outside the data roots, the
    service's limits and, once the dispatcher has read the cluster, memory per node."""
    spec = experiments.check_data_roots(spec, data_roots=settings.data_roots)
    dispatcher = request.app.state.dispatcher
    limits.check_limits(spec, settings=settings, cluster=dispatcher.cluster if dispatcher else None)
    return spec


@router.post("", status_code=201, response_model=ExperimentRead)
def create_experiment(
    spec: ExperimentSpec, request: Request, response: Response, session: SessionDep, settings: SettingsDep,
    principal: WriterDep, idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    priority: Priority = 0,
):
    """Expand the spec into runs (dataset x weighting x seed) and queue them, owned by the token's
    user, at `?priority=`. With an `Idempotency-Key`, a repeat of the same body returns the same
    experiment (409 if the body differs)."""
    spec = _accept(spec, request, settings)
    kwargs = dict(idempotency_scope=principal.token_id, idempotency_key=idempotency_key)
    try:
        exp, created = experiments.create_experiment(session, spec=spec, code_version=request.app.state.code_version,
                                                     checkpoint_every=settings.checkpoint_every, owner=principal.user,
                                                     priority=priority, **kwargs)
        session.commit()
    except IntegrityError:  # a concurrent request with the same key won the insert
        session.rollback()
        exp = store.replay_idempotent(session, scope=principal.token_id, key=idempotency_key or "",
                                      request_hash=spec.canonical_hash())
        if exp is None:
            raise
        created = False
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    request.app.state.wake_dispatcher()
    return experiments.experiment_view(exp)


@router.post(":validate", response_model=SpecCheck)
def validate_experiment(spec: ExperimentSpec, request: Request, settings: SettingsDep, _: WriterDep):
    """`POST /experiments:validate`, a dry run: the spec checked as a POST would check it (422 naming the field), its canonical
    hash (the `spec_hash` of the experiment it would create) and its runs; nothing is stored."""
    spec = _accept(spec, request, settings)
    rows = expand_runs(spec, checkpoint_every=settings.checkpoint_every)
    return SpecCheck(spec_hash=spec.canonical_hash(), spec=spec.model_dump(mode="json"), runs=len(rows),
                     weightings=sorted({r.weighting for r in rows}), config_hashes=sorted({r.job.setup_hash() for r in rows}))


@router.get("", response_model=ExperimentList)
def list_experiments(session: SessionDep, _: ReaderDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     offset: Offset = 0, cursor: Cursor = None):
    """Newest first, a page at a time: follow `next_cursor` (or use `offset`)."""
    rows, total, next_cursor = store.list_experiments(session, limit=limit, offset=offset, cursor=cursor)
    return ExperimentList(items=[ExperimentSummary.model_validate(experiments.experiment_view(e)) for e in rows],
                          total=total, limit=limit, offset=0 if cursor else offset, next_cursor=next_cursor)


@router.get("/{experiment_id}/runs", response_model=RunList)
def list_runs(experiment_id: ExperimentId, session: SessionDep, _: ReaderDep,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: Cursor = None):
    """The experiment's runs in index order, a page at a time (follow `next_cursor`)."""
    rows, next_cursor = store.list_runs(session, experiment_id=experiment_id, limit=limit, cursor=cursor)
    return RunList(experiment_id=experiment_id, items=rows, limit=limit, next_cursor=next_cursor)


@router.get("/{experiment_id}", response_model=ExperimentRead)
async def get_experiment(experiment_id: ExperimentId, session: SessionDep, _: ReaderDep):
    """The experiment, its runs and its spec. (Async: two indexed reads in a read-only session, on the loop; see api.deps.)"""
    return experiments.experiment_view(store.get_experiment(session, experiment_id=experiment_id))


@router.post("/{experiment_id}/cancel", response_model=ExperimentRead)
def cancel_experiment(experiment_id: ExperimentId, request: Request, session: SessionDep, principal: WriterDep):
    """Queued runs are cancelled at once; live runs are stopped on Ray within seconds. Its owner's
    or an admin's (403 naming the owner otherwise)."""
    exp = experiments.cancel_experiment(session, experiment_id=experiment_id, by=principal)
    session.commit()
    request.app.state.wake_dispatcher()
    return experiments.experiment_view(exp)


@router.patch("/{experiment_id}", response_model=ExperimentRead)
def update_experiment(experiment_id: ExperimentId, body: PriorityChange, request: Request, session: SessionDep,
                      principal: WriterDep):
    """Change the priority (`{"priority": N}`, higher starts first) of the runs still queued. Its
    owner's or an admin's (403 naming the owner otherwise)."""
    exp = experiments.set_priority(session, experiment_id=experiment_id, priority=body.priority, by=principal)
    session.commit()
    request.app.state.wake_dispatcher()  # the queue's order changed
    return experiments.experiment_view(exp)
