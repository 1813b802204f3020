"""What the run queue is planned from (service.domain.queue): a few aggregate reads."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from service.core.lifecycle import LIVE_RUN, RunStatus
from service.store.models import Attempt, Experiment, Run, User

LIVE = tuple(s.value for s in LIVE_RUN)


def queued_runs(session: Session) -> list[Row]:
    """(run_id, experiment_id, index, resources, owner, priority, created_at) of every queued run."""
    return list(session.execute(
        select(Run.id.label("run_id"), Run.experiment_id, Run.index, Run.resources, Experiment.owner, Experiment.priority,
               Experiment.created_at)
        .join(Experiment, Experiment.id == Run.experiment_id)
        .where(Run.status == RunStatus.QUEUED.value)))


def live_runs(session: Session) -> list[Row]:
    """(owner, resources) of every live run."""
    return list(session.execute(select(Experiment.owner, Run.resources).join(Experiment, Experiment.id == Run.experiment_id)
                                .where(Run.status.in_(LIVE))))


def quotas(session: Session) -> list[User]:
    """The users with any limit set."""
    return list(session.scalars(select(User).where(
        User.max_runs.is_not(None) | User.max_cpus.is_not(None) | User.max_gpus.is_not(None))))


def last_served(session: Session) -> dict[str | None, datetime]:
    """Per owner, when one of their runs last started an attempt."""
    return dict(session.execute(
        select(Experiment.owner, func.max(Attempt.started_at))
        .join(Run, Run.experiment_id == Experiment.id).join(Attempt, Attempt.run_id == Run.id)
        .group_by(Experiment.owner)).all())
