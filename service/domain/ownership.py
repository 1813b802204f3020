"""Who is asking, and what they may do: a Principal is a token's user and scopes (store.tokens:
admin implies submit implies read). Work (experiments, sweeps) records the user who submitted it;
that user or an admin may cancel, reprioritise or rescore it. Work from before owners existed
(owner None) is an admin's only: nobody can show it is theirs.

Refusals are ForbiddenError (403): the caller is known, their token is not enough, and the
message says which scope, or whose work it is."""
from __future__ import annotations

from dataclasses import dataclass

from service.core.errors import ForbiddenError
from service.store.tokens import SCOPES, has_scope

ANONYMOUS = "anonymous"  # the principal when auth is disabled (an admin) and the idempotency scope then


@dataclass(frozen=True)
class Principal:
    token_id: str  # the idempotency scope: a key is one token's, not its user's
    user: str
    scopes: tuple[str, ...]

    def can(self, scope: str) -> bool:
        return has_scope(self.scopes, scope)

    @property
    def is_admin(self) -> bool:
        return self.can("admin")

    def describe(self) -> str:
        return f"user {self.user}, scopes: {' '.join(self.scopes) or 'none'}"


ANONYMOUS_ADMIN = Principal(token_id=ANONYMOUS, user=ANONYMOUS, scopes=("admin",))


def require_scope(principal: Principal, scope: str) -> Principal:
    """The principal, if its token holds `scope` (or one above it); ForbiddenError naming it otherwise."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if not principal.can(scope):
        raise ForbiddenError(f"this token ({principal.describe()}) lacks the {scope!r} scope", needs=scope)
    return principal


def require_owner(principal: Principal, owner: str | None, what: str, *, action: str = "change") -> None:
    """Nothing if the principal owns the work (`owner`) or is an admin; ForbiddenError naming the
    owner otherwise. `what` names the work ("experiment exp_…"), `action` what was refused."""
    if principal.is_admin or (owner is not None and owner == principal.user):
        return
    if owner is None:
        raise ForbiddenError(f"{what} has no owner (it is from before owners existed); user {principal.user} may not "
                             f"{action} it (needs an admin token)", needs="admin")
    raise ForbiddenError(f"{what} is owned by {owner}; user {principal.user} may not {action} it "
                         "(needs its owner or an admin token)", needs="admin", owner=owner)
