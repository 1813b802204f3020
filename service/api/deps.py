"""Request-scoped dependencies as Annotated aliases (swap them with app.dependency_overrides)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.errors import AuthError
from service.store.db import read_only
from service.store.tokens import verify_token


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        if request.method in ("GET", "HEAD"):  # reads never write: no SQLite write lock
            read_only(session)
        try:
            yield session
        except BaseException:
            session.rollback()
            raise


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


# scope="function": the session closes when the route returns, before the response is sent.
# max_concurrency: requests beyond it wait on the event loop (not in a worker thread) for a
# session, so a burst can never exhaust the thread pool while holders wait to clean up.
MAX_SESSIONS = 16
SessionDep = Annotated[Session, Depends(get_session, scope="function", max_concurrency=MAX_SESSIONS)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

_bearer = HTTPBearer(auto_error=False, description="API token from `snrlab token create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def require_token(session: SessionDep, settings: SettingsDep, creds: Credentials) -> str:
    """The caller's token id (scope for idempotency keys); 401 without a valid token."""
    if not settings.auth_enabled:
        return "anonymous"
    if creds is None or not creds.credentials:
        raise AuthError("missing bearer token (Authorization: Bearer <token>)")
    return verify_token(session, token=creds.credentials).id


def allow_read(session: SessionDep, settings: SettingsDep, creds: Credentials) -> str | None:
    if settings.public_reads or not settings.auth_enabled:
        return None
    return require_token(session, settings, creds)


WriterDep = Annotated[str, Depends(require_token)]
ReaderDep = Annotated[str | None, Depends(allow_read)]


# Ids and filters reach SQL: a NUL byte (PostgreSQL refuses it) or an overlong value is a 422
# naming the parameter, never a database error.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
ExperimentId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
RunId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
SweepId = Annotated[str, Path(min_length=1, max_length=40, pattern=ID_PATTERN)]
Filter = Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")]
