"""Domain errors, raised below the API and mapped once to HTTP in `service.main`."""
from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class InvalidTransitionError(ConflictError):
    code = "invalid_transition"


class AuthError(ServiceError):
    status_code = 401
    code = "unauthorized"


class SpecError(ServiceError):
    """An experiment spec that parses but cannot run; `loc` names the field like pydantic."""

    status_code = 422
    code = "invalid_spec"

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc
