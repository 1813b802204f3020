"""Users: whoever owns tokens and work, and their quota. A user comes into being with their first
token (`tokens.create_token`); quotas are None (no limit) until an admin sets them."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import NotFoundError
from service.store.models import User

MAX_NAME = 100  # users.name


def get_or_create_user(session: Session, *, name: str) -> User:
    """The user row, inserted (no quota) on first use, in the caller's transaction."""
    if not name or len(name) > MAX_NAME or "\x00" in name:
        raise ValueError(f"a user name is 1 to {MAX_NAME} characters (no NUL): {name!r}")
    user = session.get(User, name)
    if user is None:
        user = User(name=name)
        session.add(user)
        session.flush()
    return user


def get_user(session: Session, *, name: str) -> User:
    user = session.get(User, name)
    if user is None:
        raise NotFoundError(f"user {name!r} not found")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


KEEP = object()  # set_quota: leave this limit as it is


def set_quota(session: Session, *, name: str, max_runs: int | None | object = KEEP, max_cpus: float | None | object = KEEP,
              max_gpus: float | None | object = KEEP) -> User:
    """Change the limits given (None lifts one; those not given stay), creating the user if they
    have no token yet, so a quota can be set before the first token. The dispatcher enforces them.
    Negative limits are refused: zero already means "none of that kind"."""
    changes = {k: v for k, v in dict(max_runs=max_runs, max_cpus=max_cpus, max_gpus=max_gpus).items() if v is not KEEP}
    for what, value in changes.items():
        if value is not None and value < 0:
            raise ValueError(f"{what} must be >= 0 (or none for no limit), not {value:g}")
    user = get_or_create_user(session, name=name)
    for what, value in changes.items():
        setattr(user, what, value)
    session.flush()
    return user
