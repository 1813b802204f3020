from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy.exc import IntegrityError

from service.store import crud
from service.domain import limits
from service.domain import spec as schemas
from service.api.deps import ExperimentId, ReaderDep, SessionDep, SettingsDep, WriterDep
from service.api.errors import ERROR_RESPONSES

router = APIRouter(prefix="/experiments", tags=["experiments"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=schemas.ExperimentRead)
def create_experiment(
    spec: schemas.ExperimentSpec, request: Request, response: Response, session: SessionDep, settings: SettingsDep,
    principal: WriterDep, idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
):
    """Expand the spec into runs (dataset x weighting x seed) and queue them. With an
    `Idempotency-Key`, a repeat of the same body returns the same experiment (409 if the body differs)."""
    spec = crud.check_data_roots(spec, data_roots=settings.data_roots)
    dispatcher = request.app.state.dispatcher
    limits.check_limits(spec, settings=settings, cluster=dispatcher.cluster if dispatcher else None)
    kwargs = dict(idempotency_scope=principal, idempotency_key=idempotency_key)
    try:
        exp, created = crud.create_experiment(
            session, spec=spec, code_version=request.app.state.code_version,
            checkpoint_every=settings.checkpoint_every, **kwargs,
        )
        session.commit()
    except IntegrityError:  # a concurrent request with the same key won the insert
        session.rollback()
        exp = crud.replay_idempotent(session, scope=principal, key=idempotency_key or "", request_hash=spec.canonical_hash())
        if exp is None:
            raise
        created = False
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    request.app.state.wake_dispatcher()
    return crud.experiment_view(exp)


@router.get("", response_model=schemas.ExperimentList)
def list_experiments(
    session: SessionDep, _: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
):
    rows, total = crud.list_experiments(session, limit=limit, offset=offset)
    return schemas.ExperimentList(
        items=[schemas.ExperimentSummary(**crud.experiment_view(e)) for e in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{experiment_id}", response_model=schemas.ExperimentRead)
def get_experiment(experiment_id: ExperimentId, session: SessionDep, _: ReaderDep):
    return crud.experiment_view(crud.get_experiment(session, experiment_id=experiment_id))


@router.post("/{experiment_id}/cancel", response_model=schemas.ExperimentRead)
def cancel_experiment(experiment_id: ExperimentId, request: Request, session: SessionDep, _: WriterDep):
    """Queued runs are cancelled at once; live runs are stopped on Ray within seconds."""
    exp = crud.cancel_experiment(session, experiment_id=experiment_id)
    session.commit()
    request.app.state.wake_dispatcher()
    return crud.experiment_view(exp)
