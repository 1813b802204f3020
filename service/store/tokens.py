"""API tokens: only their sha256 is stored; the token itself is shown once."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from service.core.errors import AuthError, NotFoundError
from service.core.lifecycle import utcnow
from service.store.models import ApiToken

TOKEN_PREFIX = "snr_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, name: str) -> tuple[ApiToken, str]:
    """Returns (row, token): the token itself is never stored, only its sha256."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), user=name, scopes="admin")
    session.add(row)
    session.flush()
    return row, token


# Built once and run on the session's connection (Core, no ORM objects): every request runs it.
_LIVE_BY_HASH = select(ApiToken.id, ApiToken.name).where(ApiToken.token_hash == bindparam("token_hash"),
                                                         ApiToken.revoked_at.is_(None))


def verify_token(session: Session, *, token: str) -> Row:
    """The live token's (id, name); AuthError if it is unknown or revoked."""
    row = session.connection().execute(_LIVE_BY_HASH, {"token_hash": hash_token(token)}).first()
    if row is None:
        raise AuthError("invalid or revoked API token")
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke_token(session: Session, *, token_id: str) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"token {token_id!r} not found")
    row.revoked_at = row.revoked_at or utcnow()
    return row
