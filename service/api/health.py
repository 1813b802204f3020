from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from service import schemas
from service.api.deps import SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.Health)
def healthz(request: Request, session: SessionDep):
    """Liveness: the database answers; reports the dispatcher's state. No auth."""
    session.execute(text("SELECT 1"))
    dispatcher = request.app.state.dispatcher
    return schemas.Health(
        status="ok", database=session.get_bind().dialect.name,
        dispatcher=dispatcher.state if dispatcher else "disabled", version=request.app.state.code_version,
    )
