from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from service.store import crud
from service.runtime import paths
from service.domain import spec as schemas
from service.api.deps import ReaderDep, RunId, SessionDep, SettingsDep
from service.api.errors import ERROR_RESPONSES
from service.core.errors import NotFoundError

router = APIRouter(prefix="/runs", tags=["runs"], responses=ERROR_RESPONSES)


@router.get("/{run_id}", response_model=schemas.RunRead)
def get_run(run_id: RunId, session: SessionDep, _: ReaderDep):
    return crud.get_run(session, run_id=run_id)


@router.get("/{run_id}/metrics", response_model=schemas.MetricsRead)
def get_metrics(
    run_id: RunId, session: SessionDep, _: ReaderDep,
    since_step: Annotated[int, Query(ge=-1, le=10**9)] = -1, limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
):
    """Loss curves: one point per logged step (loss and the per-quartile MSE the trainer logs)."""
    points = crud.get_metrics(session, run_id=run_id, since_step=since_step, limit=limit)
    return schemas.MetricsRead(run_id=run_id, points=points)


@router.get("/{run_id}/results", response_model=schemas.ResultsRead)
def get_results(run_id: RunId, session: SessionDep, _: ReaderDep):
    run, rows = crud.get_results(session, run_id=run_id)
    return schemas.ResultsRead(run_id=run.id, status=run.status, results=rows)


@router.get("/{run_id}/artifacts", response_model=list[str])
def list_artifacts(run_id: RunId, session: SessionDep, settings: SettingsDep, _: ReaderDep):
    """Relative paths of the evaluator's sample grids and analysis plots."""
    crud.get_run(session, run_id=run_id)
    root = paths.artifacts_dir(settings.runs_dir, run_id)
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@router.get("/{run_id}/artifacts/{path:path}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}})
def get_artifact(run_id: RunId, path: str, session: SessionDep, settings: SettingsDep, _: ReaderDep):
    crud.get_run(session, run_id=run_id)
    root = paths.artifacts_dir(settings.runs_dir, run_id).resolve()
    try:
        target = (root / path).resolve()
        found = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):  # NUL bytes, names too long, ...
        found = False
    if not found:
        raise NotFoundError(f"artifact {path[:200]!r} not found for run {run_id!r}")
    return FileResponse(target)
