"""`GET /api/v1/queue`: the queued runs in the order the dispatcher will start them, and why each waits."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from service.api.deps import ReaderDep, SessionDep
from service.api.errors import ERROR_RESPONSES
from service.domain import queue
from service.store.models import Experiment, Run

router = APIRouter(tags=["queue"], responses=ERROR_RESPONSES)


class QueueItem(BaseModel):
    position: int = Field(description="1 = considered first at the next dispatcher pass")
    run_id: str
    experiment_id: str
    experiment: str
    label: str = Field(description="dataset, weighting and seed of the run")
    owner: str | None
    priority: int
    queued_since: datetime = Field(description="when its experiment was submitted")
    starts_next: bool = Field(description="starts at the next pass (quota, cap and room all allow it)")
    waiting_for: str | None = Field(description="why it waits: a quota, the service's cap or room on the cluster")


class UserUsage(BaseModel):
    user: str | None
    running: int
    cpus: float
    gpus: float
    max_runs: int | None = None
    max_cpus: float | None = None
    max_gpus: float | None = None
    queued: int


class QueueView(BaseModel):
    items: list[QueueItem]
    total: int
    users: list[UserUsage] = Field(description="per user: runs going, CPUs and GPUs in use, quota, runs queued")
    order: str = Field(description="how the queue is ordered")


ORDER = ("priority (higher first), then fair share across users at one priority (round robin, least recently "
         "served first), then submission order; a run that waits does not block the ones after it")


@router.get("/queue", response_model=QueueView)
def get_queue(request: Request, session: SessionDep, _: ReaderDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    """The queued runs in start order, with their position and what each waits for."""
    return queue_view(session, request, limit=limit)


def queue_view(session, request: Request, *, limit: int) -> QueueView:
    """The same plan the dispatcher follows, from the dispatcher's copy of the cluster (no Ray call)."""
    state = queue.read_state(session)
    dispatcher = request.app.state.dispatcher
    cluster = dispatcher.cluster if dispatcher is not None else None  # the dispatcher's copy: no Ray call here
    placements = queue.plan_state(state, share=cluster.share if cluster else None,
                                  max_concurrent_runs=request.app.state.settings.max_concurrent_runs)
    shown = placements[:limit]
    labels = {r.id: (r.name, f"{r.dataset} {r.weighting} s{r.seed}") for r in session.execute(
        select(Run.id, Experiment.name, Run.dataset, Run.weighting, Run.seed).join(Experiment, Experiment.id == Run.experiment_id)
        .where(Run.id.in_([p.run.run_id for p in shown])))}
    items = [QueueItem(position=p.position, run_id=p.run.run_id, experiment_id=p.run.experiment_id,
                       experiment=labels.get(p.run.run_id, ("", ""))[0], label=labels.get(p.run.run_id, ("", ""))[1],
                       owner=p.run.owner, priority=p.run.priority, queued_since=p.run.created_at, starts_next=p.start,
                       waiting_for=p.reason) for p in shown]
    return QueueView(items=items, total=len(placements), users=_usage(state), order=ORDER)


def _usage(state: queue.QueueState) -> list[UserUsage]:
    usage = queue.usage_by_user(state.live)
    queued: dict[str, int] = {}
    for r in state.queued:
        queued[r.owner or queue.NO_OWNER] = queued.get(r.owner or queue.NO_OWNER, 0) + 1
    out = []
    for user in sorted(set(usage) | set(queued)):
        quota, held = state.quotas.get(user, queue.Quota()), usage[user]
        out.append(UserUsage(user=user or None, running=held.runs, cpus=held.cpus, gpus=held.gpus, queued=queued.get(user, 0),
                             max_runs=quota.max_runs, max_cpus=quota.max_cpus, max_gpus=quota.max_gpus))
    return out
