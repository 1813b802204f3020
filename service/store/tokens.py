"""API tokens: only their sha256 is stored; the token itself is shown once.

A token belongs to a user (created with their first token) and carries scopes. The scopes form
one ladder, each implying those below it: `read` (every GET), `submit` (submit, validate, and
cancel, reprioritise or rescore one's own work), `admin` (all of that on anyone's work). A token
may also expire (`expires_at`); an expired or revoked one is a 401 like an unknown one."""
from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Row, bindparam, select
from sqlalchemy.orm import Session

from service.core.errors import AuthError, NotFoundError
from service.core.lifecycle import utcnow
from service.store.models import ApiToken
from service.store.users import get_or_create_user

TOKEN_PREFIX = "snr_"
SCOPES = ("read", "submit", "admin")  # the ladder, lowest first: a scope implies every one before it


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """Scope names (a space-separated string or a list), checked and deduplicated, lowest first;
    ValueError naming the valid ones for anything else."""
    given = scopes.split() if isinstance(scopes, str) else [s for part in scopes for s in part.split()]
    unknown = [s for s in given if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; valid: {', '.join(SCOPES)}")
    if not given:
        raise ValueError(f"a token needs at least one scope ({', '.join(SCOPES)})")
    return tuple(s for s in SCOPES if s in given)


def has_scope(scopes: str | Iterable[str], needed: str) -> bool:
    """Whether tokens with these scopes may do what `needed` allows (admin implies submit implies read)."""
    held = scopes.split() if isinstance(scopes, str) else list(scopes)
    rank = SCOPES.index(needed)
    return any(s in SCOPES and SCOPES.index(s) >= rank for s in held)


def create_token(session: Session, *, name: str, user: str | None = None, scopes: str | Iterable[str] = ("submit",),
                 expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """Returns (row, token): the token itself is never stored, only its sha256. `user` (default:
    the token's name) is created if it has no token yet. Least privilege by default: `submit`."""
    checked = parse_scopes(scopes)
    owner = get_or_create_user(session, name=user or name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), user=owner.name, scopes=" ".join(checked), expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, token


# Built once and run on the session's connection (Core, no ORM objects): every request runs it.
# One indexed row (token_hash is unique); expiry is checked on the row, so the 401 can say when.
_LIVE_BY_HASH = select(ApiToken.id, ApiToken.name, ApiToken.user, ApiToken.scopes, ApiToken.expires_at).where(
    ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))


def verify_token(session: Session, *, token: str) -> Row:
    """The live token's (id, name, user, scopes, expires_at); AuthError if it is unknown, revoked or expired."""
    row = session.connection().execute(_LIVE_BY_HASH, {"token_hash": hash_token(token)}).first()
    if row is None:
        raise AuthError("invalid or revoked API token")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise AuthError(f"API token {row.id} ({row.name}) expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke_token(session: Session, *, token_id: str) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"token {token_id!r} not found")
    row.revoked_at = row.revoked_at or utcnow()
    return row
