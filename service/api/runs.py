from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from service.api import schemas
from service.api.deps import Cursor, ReaderDep, RunId, SessionDep, SettingsDep
from service.api.errors import ERROR_RESPONSES
from service.runtime import paths
from service.store import runs as store

router = APIRouter(prefix="/runs", tags=["runs"], responses=ERROR_RESPONSES)


@router.get("/{run_id}", response_model=schemas.RunRead)
async def get_run(run_id: RunId, session: SessionDep, _: ReaderDep):
    """The run, its attempts and its resolved config. (Async: indexed reads in a read-only session, on the loop; see api.deps.)"""
    return store.get_run(session, run_id=run_id)


@router.get("/{run_id}/metrics", response_model=schemas.MetricsRead)
def get_metrics(
    run_id: RunId, session: SessionDep, _: ReaderDep,
    since_step: Annotated[int, Query(ge=-1, le=10**9)] = -1, limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
):
    """Loss curves: one point per logged step (loss and the per-quartile MSE the trainer logs)."""
    points = store.get_metrics(session, run_id=run_id, since_step=since_step, limit=limit)
    return schemas.MetricsRead(run_id=run_id, points=points, next_since_step=points[-1].step if len(points) == limit else None)


@router.get("/{run_id}/results", response_model=schemas.ResultsRead)
def get_results(run_id: RunId, session: SessionDep, _: ReaderDep, limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
                cursor: Cursor = None):
    """Every evaluated cell of the run, or a page of them with `limit` (follow `next_cursor`)."""
    run, rows, next_cursor = store.get_results(session, run_id=run_id, limit=limit, cursor=cursor)
    return schemas.ResultsRead(run_id=run.id, status=run.status, results=rows, next_cursor=next_cursor)


@router.get("/{run_id}/artifacts", response_model=list[str])
def list_artifacts(run_id: RunId, session: SessionDep, settings: SettingsDep, _: ReaderDep):
    """Relative paths of the evaluator's sample grids, analysis plots and stored features."""
    store.get_run(session, run_id=run_id)
    return paths.list_artifacts(settings.runs_dir, run_id)


@router.get("/{run_id}/artifacts/{path:path}", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}})
def get_artifact(run_id: RunId, path: str, session: SessionDep, settings: SettingsDep, _: ReaderDep):
    return artifact_response(session, settings, run_id, path)


def artifact_response(session, settings, run_id: str, path: str) -> FileResponse:
    """One artifact of a run (404 for anything outside its artifacts folder); the API's route and
    the page's (behind the page's auth: an <img> cannot send a Bearer header) both serve this."""
    store.get_run(session, run_id=run_id)
    return FileResponse(paths.artifact_file(settings.runs_dir, run_id, path))
