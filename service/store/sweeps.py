"""Sweeps: rows of their own beside the experiment whose runs are their trials."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.errors import NotFoundError
from service.store.models import Sweep


def get_sweep(session: Session, *, sweep_id: str, for_update: bool = False) -> Sweep:
    q = select(Sweep).where(Sweep.id == sweep_id)
    if for_update:
        q = q.with_for_update()
    sweep = session.scalar(q)
    if sweep is None:
        raise NotFoundError(f"sweep {sweep_id!r} not found")
    return sweep


def list_sweeps(session: Session, *, limit: int = 50, offset: int = 0) -> tuple[list[Sweep], int]:
    total = session.scalar(select(func.count()).select_from(Sweep)) or 0
    rows = session.scalars(select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id).limit(limit).offset(offset)).all()
    return list(rows), total
