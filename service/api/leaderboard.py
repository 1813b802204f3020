from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from service.api.deps import Filter, ReaderDep, SessionDep
from service.api.errors import ERROR_RESPONSES
from service.domain.leaderboard import Leaderboard, leaderboard

router = APIRouter(tags=["leaderboard"], responses=ERROR_RESPONSES)


@router.get("/leaderboard", response_model=Leaderboard)
def get_leaderboard(session: SessionDep, _: ReaderDep, dataset: Filter = None, metric: Filter = None, sampler: Filter = None,
                    experiment: Filter = None, train_steps: Literal["final", "all"] = "final"):
    """Rows (dataset, training step, T) x columns (weighting): mean, std and n over seeds; the best
    cell per row is marked. `train_steps=all` adds the intermediate checkpoints of `evaluation.at_steps`."""
    return leaderboard(session, dataset=dataset, metric=metric, sampler=sampler, experiment_id=experiment,
                       train_steps=train_steps)
