"""Request-scoped dependencies as Annotated aliases (swap them with app.dependency_overrides)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.errors import AuthError
from service.domain.experiments import MAX_PRIORITY, MIN_PRIORITY
from service.domain.ownership import ANONYMOUS_ADMIN, Principal, require_scope
from service.store.db import read_only
from service.store.tokens import verify_token


# Async dependencies run on the event loop, sync ones in a worker thread each. Opening a session
# and the reads of auth and the leaderboard cache are a few indexed one-row reads, so they run on
# the loop (py-spy: the thread hand-offs, and the GIL convoy they cause, were most of a cached
# request's time), always in a read-only session: on SQLite a writer's first statement is BEGIN
# IMMEDIATE, which waits for the write lock, and must never run on the loop.
async def get_session(request: Request) -> AsyncIterator[Session]:
    with request.app.state.session_factory() as session:
        if is_read(request):  # reads never write: no SQLite write lock
            read_only(session)
        try:
            yield session
        except BaseException:
            session.rollback()
            raise


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


# scope="function": the session closes when the route returns, before the response is sent.
# max_concurrency: requests beyond it wait on the event loop (not in a worker thread) for a
# session, so a burst can never exhaust the thread pool while holders wait to clean up.
MAX_SESSIONS = 16
SessionDep = Annotated[Session, Depends(get_session, scope="function", max_concurrency=MAX_SESSIONS)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

_bearer = HTTPBearer(auto_error=False, description="API token from `snrlab token create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _principal(session: Session, creds: HTTPAuthorizationCredentials | None) -> Principal:
    """The token's user and scopes: one indexed Core read (store.tokens.verify_token); 401 if the
    token is missing, unknown, revoked or expired."""
    if creds is None or not creds.credentials:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    row = verify_token(session, token=creds.credentials)
    return Principal(token_id=row.id, user=row.user, scopes=tuple(row.scopes.split()))


async def require_token(request: Request, settings: SettingsDep, creds: Credentials) -> Principal:
    """The caller (its token id is the scope of idempotency keys); 401 without a valid token, an
    anonymous admin when auth is disabled. Checked in a read-only session of its own: in the
    writer's session it would begin the write transaction (SQLite's write lock) before the route
    has even validated its body."""
    if not settings.auth_enabled:
        return ANONYMOUS_ADMIN
    with request.app.state.session_factory() as session:
        return _principal(read_only(session), creds)


async def require_submit(request: Request, settings: SettingsDep, creds: Credentials) -> Principal:
    """A caller whose token holds `submit` (or `admin`); 401 without a token, 403 naming the scope."""
    return require_scope(await require_token(request, settings, creds), "submit")


async def require_admin(request: Request, settings: SettingsDep, creds: Credentials) -> Principal:
    return require_scope(await require_token(request, settings, creds), "admin")


async def allow_read(request: Request, session: SessionDep, settings: SettingsDep, creds: Credentials) -> Principal | None:
    """The reader (None when reads are public); 401 without a valid token. Every scope implies
    `read`, so any live token reads; the check is kept so the rule is one place."""
    if settings.public_reads or not settings.auth_enabled:
        return None
    if not is_read(request):  # a writer's session: check in a read-only one
        return require_scope(await require_token(request, settings, creds), "read")
    return require_scope(_principal(session, creds), "read")


def is_read(request: Request) -> bool:
    """GET and HEAD: their sessions are read-only (get_session), so their reads never wait on a lock."""
    return request.method in ("GET", "HEAD")


# WriterDep: any mutation (submit scope); whether the work is the caller's is checked where the row
# is read (service.domain.ownership.require_owner). AdminDep: what only an admin may do.
WriterDep = Annotated[Principal, Depends(require_submit)]
AdminDep = Annotated[Principal, Depends(require_admin)]
ReaderDep = Annotated[Principal | None, Depends(allow_read)]


# Ids and filters reach SQL: a NUL byte (PostgreSQL refuses it) or an overlong value is a 422
# naming the parameter, never a database error.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
ExperimentId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
RunId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
SweepId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
Filter = Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")]
Cursor = Annotated[str | None, Query(min_length=1, max_length=1000, pattern=r"^[A-Za-z0-9_-]+$",
                                     description="`next_cursor` of the previous page (keyset pagination)")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="rows to skip (prefer `cursor`: stable while rows are added)")]
# `?priority=` of POST /experiments and /sweeps: a query parameter, not a field of the spec, since
# the spec (and its hash) says what is computed and the priority only when.
Priority = Annotated[int, Query(ge=MIN_PRIORITY, le=MAX_PRIORITY, description="higher starts first (default 0)")]
