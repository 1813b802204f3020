"""Runs, their metric points and their evaluated results."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from service.core.errors import NotFoundError
from service.store.models import MetricPoint, Result, Run
from service.store.pages import keyset_page


def get_run(session: Session, *, run_id: str) -> Run:
    run = session.scalar(select(Run).where(Run.id == run_id).options(selectinload(Run.attempts)))
    if run is None:
        raise NotFoundError(f"run {run_id!r} not found")
    return run


def get_metrics(session: Session, *, run_id: str, since_step: int = -1, limit: int = 10_000) -> list[MetricPoint]:
    get_run(session, run_id=run_id)
    return list(
        session.scalars(
            select(MetricPoint)
            .where(MetricPoint.run_id == run_id, MetricPoint.step > since_step)
            .order_by(MetricPoint.step)
            .limit(limit)
        )
    )


def upsert_metrics(session: Session, *, run_id: str, points: list[dict[str, Any]]) -> None:
    """Idempotent by (run, step): a resumed attempt re-logging a step overwrites, never duplicates."""
    if not points:
        return
    by_step = {int(p["step"]): p for p in points}
    rows = [{"run_id": run_id, "step": s, "values": v} for s, v in sorted(by_step.items())]
    dialect = session.get_bind().dialect.name
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(MetricPoint)
    stmt = ins.values(rows)
    stmt = stmt.on_conflict_do_update(index_elements=["run_id", "step"], set_={"values": stmt.excluded["values"]})
    session.execute(stmt)


RESULT_ORDER = (Result.metric, Result.sampler, Result.train_step, Result.num_steps)  # unique per run


def get_results(session: Session, *, run_id: str, limit: int | None = None,
                cursor: str | None = None) -> tuple[Run, list[Result], str | None]:
    """(run, one page of its results, next_cursor); every result when `limit` is None."""
    run = get_run(session, run_id=run_id)
    stmt = select(Result).where(Result.run_id == run_id)
    if limit is None and cursor is None:
        return run, list(session.scalars(stmt.order_by(*RESULT_ORDER))), None
    rows, next_cursor = keyset_page(session, stmt, RESULT_ORDER, limit=limit or 10_000, cursor=cursor,
                                    key=lambda r: (r.metric, r.sampler, r.train_step, r.num_steps))
    return run, rows, next_cursor


def record_results(session: Session, *, run_id: str, results: list[dict[str, Any]], default_train_step: int | None = None) -> int:
    """Insert evaluated cells once; cells already recorded (a replay after restart, or the
    intermediate results seen while training) are kept. A row without `train_step` is of the
    final checkpoint (`default_train_step`, the run's total_steps)."""
    if default_train_step is None:
        default_train_step = session.scalar(select(Run.total_steps).where(Run.id == run_id))
    existing = set(
        session.execute(
            select(Result.train_step, Result.num_steps, Result.sampler, Result.metric).where(Result.run_id == run_id)
        ).all()
    )
    added = 0
    for r in results:
        key = (int(r.get("train_step") or default_train_step), int(r["num_steps"]), str(r["sampler"]), str(r["metric"]))
        if key in existing:
            continue
        existing.add(key)
        extra = {k: v for k, v in r.items()
                 if k not in ("train_step", "num_steps", "sampler", "metric", "value", "num_gen", "extractor")}
        session.add(
            Result(run_id=run_id, train_step=key[0], num_steps=key[1], sampler=key[2], metric=key[3], value=float(r["value"]),
                   num_gen=r.get("num_gen"), extractor=r.get("extractor"), extra=extra or None)
        )
        added += 1
    session.flush()
    return added
