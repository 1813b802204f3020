from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.api.deps import Cursor, Offset, Priority, ReaderDep, SessionDep, SettingsDep, SweepId, WriterDep
from service.api.errors import ERROR_RESPONSES
from service.domain import limits, sweeps
from service.domain.sweep_spec import SweepSpec, check_sweep
from service.domain.sweeps import SweepList, SweepRead
from service.store import sweeps as store

router = APIRouter(prefix="/sweeps", tags=["sweeps"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=SweepRead)
def create_sweep(spec: SweepSpec, request: Request, session: SessionDep, settings: SettingsDep, principal: WriterDep,
                 priority: Priority = 0):
    """Validate every finite combination of the search space (422 naming the key at fault) and the
    resources (422 if no trial's run could ever start; concurrency capped to what the cluster fits),
    then queue the sweep, owned by the token's user. Its trials become runs of `experiment_id` as
    Ray Tune starts them, queued at `?priority=`."""
    dispatcher = request.app.state.dispatcher
    cluster = dispatcher.cluster if dispatcher is not None else None  # the dispatcher's copy: no Ray call here
    spec = check_sweep(spec, data_roots=settings.data_roots,
                       check_trial=lambda trial: limits.check_limits(trial, settings=settings, cluster=cluster))
    n, note = spec.max_concurrent_trials, None
    if cluster is not None:  # else the sweep manager checks when it starts the sweep
        capacity = cluster.capacity(spec.base.resources.model_dump(mode="json"))
        n, note = sweeps.concurrency(spec, capacity=capacity, max_concurrent_runs=settings.max_concurrent_runs)
    sweep = sweeps.create_sweep(session, spec=spec, code_version=request.app.state.code_version,
                                max_concurrent_trials=n, message=note, owner=principal.user, priority=priority)
    session.commit()
    request.app.state.wake_sweeps()
    return sweeps.sweep_view(session, sweep)


@router.get("", response_model=SweepList)
def list_sweeps(session: SessionDep, _: ReaderDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                offset: Offset = 0, cursor: Cursor = None):
    """Newest first, a page at a time: follow `next_cursor` (or use `offset`)."""
    rows, total, next_cursor = store.list_sweeps(session, limit=limit, offset=offset, cursor=cursor)
    return SweepList(items=[sweeps.summary_view(s) for s in rows], total=total, limit=limit, offset=0 if cursor else offset,
                     next_cursor=next_cursor)


@router.get("/{sweep_id}", response_model=SweepRead)
def get_sweep(sweep_id: SweepId, session: SessionDep, _: ReaderDep):
    """Status, every trial as a run (status, sampled config, latest metric value) and the best one."""
    return sweeps.sweep_view(session, store.get_sweep(session, sweep_id=sweep_id))


@router.post("/{sweep_id}/cancel", response_model=SweepRead)
def cancel_sweep(sweep_id: SweepId, request: Request, session: SessionDep, principal: WriterDep):
    """Queued trial runs are cancelled at once, live ones within seconds; the Tune actor is stopped.
    Its owner's or an admin's (403 naming the owner otherwise)."""
    sweep = sweeps.cancel_sweep(session, sweep_id=sweep_id, by=principal)
    session.commit()
    request.app.state.wake_dispatcher()
    request.app.state.wake_sweeps()
    return sweeps.sweep_view(session, sweep)
