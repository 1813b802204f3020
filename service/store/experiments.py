"""Experiments and their idempotency keys."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from service.core.errors import ConflictError, NotFoundError
from service.core.lifecycle import RunStatus
from service.store.models import Experiment, IdempotencyKey, Run
from service.store.pages import keyset_page


def insert_experiment(session: Session, *, name: str, spec: dict[str, Any], spec_hash: str, code_version: str,
                      runs: list[dict[str, Any]], idempotency_scope: str | None = None,
                      idempotency_key: str | None = None, owner: str | None = None, priority: int = 0) -> Experiment:
    """The experiment and all its runs (queued), in the caller's transaction. A concurrent insert of
    the same idempotency key surfaces as IntegrityError at flush. `owner` is the submitting user
    (None: an admin's only); `priority` orders the queue and is no part of the spec or its hash."""
    exp = Experiment(name=name, spec=spec, spec_hash=spec_hash, code_version=code_version, owner=owner, priority=priority)
    exp.runs = [Run(status=RunStatus.QUEUED.value, **row) for row in runs]
    session.add(exp)
    session.flush()
    if idempotency_key is not None:
        session.add(IdempotencyKey(scope=idempotency_scope or "anonymous", key=idempotency_key, request_hash=spec_hash,
                                   experiment_id=exp.id))
        session.flush()
    return exp


def replay_idempotent(session: Session, *, scope: str, key: str, request_hash: str) -> Experiment | None:
    row = session.get(IdempotencyKey, (scope, key))
    if row is None:
        return None
    if row.request_hash != request_hash:
        raise ConflictError(f"Idempotency-Key {key!r} was already used with a different body")
    return get_experiment(session, experiment_id=row.experiment_id)


def get_experiment(session: Session, *, experiment_id: str) -> Experiment:
    exp = session.scalar(
        select(Experiment).where(Experiment.id == experiment_id).options(selectinload(Experiment.runs))
    )
    if exp is None:
        raise NotFoundError(f"experiment {experiment_id!r} not found")
    return exp


def list_experiments(session: Session, *, limit: int = 50, offset: int = 0,
                     cursor: str | None = None) -> tuple[list[Experiment], int, str | None]:
    """(page, total, next_cursor), newest first. `cursor` (keyset) replaces `offset` when given."""
    total = session.scalar(select(func.count()).select_from(Experiment)) or 0
    stmt = select(Experiment).options(selectinload(Experiment.runs))
    if cursor is None:
        stmt = stmt.offset(offset)
    rows, next_cursor = keyset_page(session, stmt, (Experiment.created_at, Experiment.id), limit=limit, cursor=cursor,
                                    key=lambda e: (e.created_at, e.id), descending=True)
    return rows, total, next_cursor


def list_runs(session: Session, *, experiment_id: str, limit: int = 100, cursor: str | None = None) -> tuple[list[Run], str | None]:
    """One page of an experiment's runs in index order."""
    get_experiment_row(session, experiment_id=experiment_id)
    return keyset_page(session, select(Run).where(Run.experiment_id == experiment_id), (Run.index,), limit=limit,
                       cursor=cursor, key=lambda r: (r.index,))


def get_experiment_row(session: Session, *, experiment_id: str) -> Experiment:
    """The experiment without its runs (NotFoundError if unknown)."""
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        raise NotFoundError(f"experiment {experiment_id!r} not found")
    return exp
