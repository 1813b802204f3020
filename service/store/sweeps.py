"""Sweeps: rows of their own beside the experiment whose runs are their trials."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.errors import NotFoundError
from service.store.models import Sweep
from service.store.pages import keyset_page


def get_sweep(session: Session, *, sweep_id: str, for_update: bool = False) -> Sweep:
    q = select(Sweep).where(Sweep.id == sweep_id)
    if for_update:
        q = q.with_for_update()
    sweep = session.scalar(q)
    if sweep is None:
        raise NotFoundError(f"sweep {sweep_id!r} not found")
    return sweep


def list_sweeps(session: Session, *, limit: int = 50, offset: int = 0,
                cursor: str | None = None) -> tuple[list[Sweep], int, str | None]:
    """(page, total, next_cursor), newest first. `cursor` (keyset) replaces `offset` when given."""
    total = session.scalar(select(func.count()).select_from(Sweep)) or 0
    stmt = select(Sweep) if cursor is not None else select(Sweep).offset(offset)
    rows, next_cursor = keyset_page(session, stmt, (Sweep.created_at, Sweep.id), limit=limit, cursor=cursor,
                                    key=lambda s: (s.created_at, s.id), descending=True)
    return rows, total, next_cursor
