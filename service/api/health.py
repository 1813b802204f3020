from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from service.api.deps import ReaderDep, SessionDep
from service.api.errors import ERROR_RESPONSES
from service.core.errors import readable_error
from service.store.models import Lease, Replica

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]
    database: str
    dispatcher: str  # running (this replica leads) | standby | connecting | stopped | disabled
    version: str
    replica: str | None = Field(description="this process's replica id (host:pid:nonce); None without a dispatcher")
    leader: str | None = Field(description="the replica that holds the dispatcher lease, if any holds it")
    fenced_writes: int = Field(0, description="this replica's dispatcher writes refused since it lost the lease")


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "unavailable"]
    database: str  # "ok" or why not
    ray: str  # "connected to <addr>", "local cluster", "disabled" or "unreachable at <addr>: <reason>"
    dispatcher: str = "disabled"  # "leader", "standby", "connecting" or "disabled"
    replica: str | None = None
    leader: str | None = None


def _leader(session, now: float) -> str | None:
    row = session.get(Lease, "dispatcher")
    return row.holder if row is not None and row.holder and row.expires_at >= now else None


def _role(request: Request) -> tuple[str, str | None]:
    dispatcher, lease = request.app.state.dispatcher, request.app.state.lease
    if dispatcher is None:
        return "disabled", None
    if not dispatcher.connected:
        return "connecting", lease.replica if lease else None
    return ("leader" if dispatcher.leading else "standby"), lease.replica if lease else None


@router.get("/healthz", response_model=Health)
def healthz(request: Request, session: SessionDep):
    """Liveness: the database answers; reports the dispatcher's state and who leads. No auth."""
    session.execute(text("SELECT 1"))
    dispatcher, lease = request.app.state.dispatcher, request.app.state.lease
    return Health(status="ok", database=session.get_bind().dialect.name,
                  dispatcher=dispatcher.state if dispatcher else "disabled", version=request.app.state.code_version,
                  replica=lease.replica if lease else None, leader=_leader(session, time.time()),
                  fenced_writes=lease.refused_writes if lease else 0)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready; says why"}})
def readyz(request: Request, session: SessionDep):
    """Readiness: the database answers and the dispatcher has joined Ray (a standby replica is
    ready: it serves the API). 503 until then, with the reason (e.g. `"ray": "unreachable at
    head:6379: Connection refused"`). Says whether this replica leads. No auth."""
    leader = None
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
        leader = _leader(session, time.time())
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
    role, replica = _role(request)
    body = Readiness(status="ready" if ready else "unavailable", database=database, ray=ray, dispatcher=role,
                     replica=replica, leader=leader)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


class ReplicaView(BaseModel):
    id: str
    host: str
    pid: int
    version: str
    leader: bool
    up_s: float = Field(description="seconds since it started")
    seen_s_ago: float = Field(description="seconds since its last heartbeat (every SNRLAB_LEASE_RENEW_S)")


class LeaseView(BaseModel):
    holder: str | None
    token: int = Field(description="the fencing token: one more at every takeover")
    age_s: float | None = Field(description="seconds since the holder took the lease")
    expires_in_s: float | None


class Status(BaseModel):
    replicas: list[ReplicaView]
    lease: LeaseView
    this_replica: str | None


@router.get("/status", response_model=Status, responses={k: ERROR_RESPONSES[k] for k in (401, 403)})
def status(request: Request, session: SessionDep, _: ReaderDep):
    """The service's replicas on this database (by heartbeat), the dispatcher lease and its age."""
    now = time.time()
    row = session.get(Lease, "dispatcher")
    holder = _leader(session, now)
    replicas = [ReplicaView(id=r.id, host=r.host, pid=r.pid, version=r.version, leader=r.id == holder,
                            up_s=round(now - r.started_at, 1), seen_s_ago=round(now - r.seen_at, 1))
                for r in session.query(Replica).order_by(Replica.started_at)]
    lease = LeaseView(holder=holder, token=row.token if row else 0,
                      age_s=round(now - row.acquired_at, 1) if holder else None,
                      expires_in_s=round(row.expires_at - now, 1) if holder else None)
    _, replica = _role(request)
    return Status(replicas=replicas, lease=lease, this_replica=replica)
