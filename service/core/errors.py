"""Domain errors, raised below the API and mapped once to HTTP (service.api.errors), and how any
error reads for a user."""
from __future__ import annotations

import importlib


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


class ForbiddenError(ServiceError):
    """An authenticated caller without the scope or the ownership (403, not 401: another token
    would do, the same one sent again would not). `needs` is the scope that would be enough;
    `owner` the user whose work it is, for a refusal on ownership."""

    status_code = 403
    code = "forbidden"

    def __init__(self, message: str, *, needs: str | None = None, owner: str | None = None):
        super().__init__(message)
        self.needs, self.owner = needs, owner


class SpecError(ServiceError):
    """An experiment spec that parses but cannot run; `loc` names the field like pydantic."""

    status_code = 422
    code = "invalid_spec"

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc


def readable_error(exc: BaseException, limit: int = 1000) -> str:
    """`Type: message` of the innermost user error: unwraps Ray Train and Ray task wrappers and
    drops anything that looks like a traceback. What a user of the API sees."""
    for _ in range(10):
        inner = None
        failures = getattr(exc, "worker_failures", None)
        if failures:
            inner = next(iter(failures.values()))
        inner = inner or getattr(exc, "controller_failure", None) or getattr(exc, "cause", None)
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if any(ln.startswith("Traceback") or ln.lstrip().startswith('File "') for ln in lines):
        # a Ray-formatted error with the remote traceback: its last line is "Type: message"
        return lines[-1].strip()[:limit]
    msg = lines[0].strip() if lines else ""
    name = type(exc).__name__
    out = msg if msg.startswith(name) else f"{name}: {msg}" if msg else name
    return out[:limit]


def load_callable(path: str):
    """`module:attribute`, imported (settings.executor, a job's train_fn and evaluate_fn)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
