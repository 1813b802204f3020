from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from service.api.cache import cached
from service.api.deps import Filter, ReaderDep, SessionDep
from service.api.errors import ERROR_RESPONSES
from service.domain.leaderboard import DEFAULT_BASELINE, DEFAULT_MARGIN, Leaderboard, leaderboard

router = APIRouter(tags=["leaderboard"], responses=ERROR_RESPONSES)

Baseline = Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$",
                                description="the column the verdicts compare with: a column or a weighting's name")]
Margin = Annotated[float, Query(gt=0, lt=1, description="a tie is a 95% interval within ±margin (a fraction)")]


@router.get("/leaderboard", response_model=Leaderboard, responses={304: {"description": "not modified (If-None-Match)"}})
async def get_leaderboard(request: Request, session: SessionDep, _: ReaderDep, dataset: Filter = None, metric: Filter = None,
                    sampler: Filter = None, experiment: Filter = None, train_steps: Literal["final", "all"] = "final",
                    baseline: Baseline = DEFAULT_BASELINE, margin: Margin = DEFAULT_MARGIN):
    """Rows (dataset, training step, T) x columns (weighting): mean, std and n over seeds, the best
    cell per row, and each cell's verdict against the `baseline` column (paired by seed, Holm over
    each table; see `tables` for the captions, mean ranks and verdict counts). `train_steps=all`
    adds the intermediate checkpoints of `evaluation.at_steps`. Cached under the results version
    (an ETag; If-None-Match gives 304)."""
    params = dict(dataset=dataset, metric=metric, sampler=sampler, experiment_id=experiment, train_steps=train_steps,
                  baseline=baseline, margin=margin)
    return await cached(request, session, ("api", *sorted(params.items())),
                         lambda: leaderboard(session, **params).model_dump_json().encode(), "application/json")
