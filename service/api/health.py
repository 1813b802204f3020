from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

from service.api import schemas
from service.api.deps import SessionDep
from service.core.errors import readable_error

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "unavailable"]
    database: str  # "ok" or why not
    ray: str  # "connected to <addr>", "local cluster", "disabled" or "unreachable at <addr>: <reason>"


@router.get("/healthz", response_model=schemas.Health)
def healthz(request: Request, session: SessionDep):
    """Liveness: the database answers; reports the dispatcher's state. No auth."""
    session.execute(text("SELECT 1"))
    dispatcher = request.app.state.dispatcher
    return schemas.Health(
        status="ok", database=session.get_bind().dialect.name,
        dispatcher=dispatcher.state if dispatcher else "disabled", version=request.app.state.code_version,
    )


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready; says why"}})
def readyz(request: Request, session: SessionDep):
    """Readiness: the database answers and the dispatcher has joined Ray. 503 until then, with
    the reason (e.g. `"ray": "unreachable at head:6379: Connection refused"`). No auth."""
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as e:  # noqa: BLE001 - reported, not raised: this endpoint says why
        database = f"unreachable: {readable_error(e)}"
    dispatcher = request.app.state.dispatcher
    address = request.app.state.settings.ray_address
    if dispatcher is None:
        ray = "disabled"
    elif not dispatcher.connected:
        ray = dispatcher.connect_error or "connecting"
    else:
        ray = f"connected to {address}" if address else "local cluster"
    ready = database == "ok" and (dispatcher is None or dispatcher.connected)
    body = Readiness(status="ready" if ready else "unavailable", database=database, ray=ray)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
