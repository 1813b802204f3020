from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from evaluator.config import Metric
from service.api.deps import RunId, SessionDep, SettingsDep, WriterDep
from service.api.errors import ERROR_RESPONSES
from service.domain.ownership import require_owner
from service.runtime.rescore import rescore_run
from service.domain.spec import RequestModel
from service.store import runs as store
from service.store.experiments import get_experiment_row

router = APIRouter(prefix="/runs", tags=["runs"], responses=ERROR_RESPONSES)


class RescoreRequest(RequestModel):
    metrics: list[Metric] = Field(min_length=1, max_length=20, description="e.g. fd_digits_inf, kid, cs_digits")


class Rescored(BaseModel):
    run_id: str
    added: Annotated[int, Field(description="cells recorded now (those already there are kept)")]


@router.post("/{run_id}/rescore", response_model=Rescored)
def rescore(run_id: RunId, body: RescoreRequest, request: Request, session: SessionDep, settings: SettingsDep,
            principal: WriterDep):
    """Score a succeeded run's stored features with more metrics, without sampling again; the new
    cells join the leaderboard (409 for a run without stored features). The owner of the run's
    experiment's or an admin's (403 naming the owner otherwise)."""
    run = store.get_run(session, run_id=run_id)
    owner = get_experiment_row(session, experiment_id=run.experiment_id).owner
    require_owner(principal, owner, f"run {run.id} (experiment {run.experiment_id})", action="rescore")
    added = rescore_run(session, run=run, metrics=list(body.metrics), runs_dir=settings.runs_dir, data_dir=settings.data_dir)
    session.commit()
    return Rescored(run_id=run_id, added=added)
