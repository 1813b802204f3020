"""Domain errors -> HTTP, mapped once. Bodies are stable JSON; never a traceback, and any input
echoed back (a validation error's `input`, a name in a message) is made encodable first: a NaN,
a lone surrogate or bytes in a request must not turn a 422 into a 500."""
from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.core.errors import AuthError, ForbiddenError, ServiceError, SpecError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    needs: str | None = Field(None, description="403: the scope that would be enough (read, submit, admin)")
    owner: str | None = Field(None, description="403 on ownership: the user whose work it is (absent for work from before owners)")


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "the body is not valid JSON"},
    401: {"model": ErrorResponse, "description": "missing, invalid, revoked or expired API token"},
    403: {"model": ErrorResponse, "description": "the token lacks the scope (`needs`) or the work is another user's (`owner`)"},
    404: {"model": ErrorResponse, "description": "not found"},
    409: {"model": ErrorResponse, "description": "conflict"},
    413: {"model": ErrorResponse, "description": "body too large"},
}

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              409: "conflict", 413: "too_large", 415: "unsupported_media_type"}


def encodable(obj: Any) -> Any:
    """A JSON- and UTF-8-encodable copy: non-finite floats and anything else exotic become text,
    unpaired surrogates are written as their escape (`\\ud800`)."""
    if obj is None or isinstance(obj, (bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "backslashreplace")
    if isinstance(obj, dict):
        return {encodable(k if isinstance(k, str) else str(k)): encodable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [encodable(v) for v in obj]
    return encodable(str(obj))


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra: Any) -> JSONResponse:
    """`{"error": {"code", "message"}}`, plus the fields of `extra` that are set (a 403's `needs`, `owner`)."""
    body = {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return JSONResponse({"error": encodable(body)}, status_code=status, headers=headers)


CANDIDATE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    methods = {m for m in CANDIDATE_METHODS
               if any(route.matches({**request.scope, "method": m})[0] is Match.FULL for route in request.app.router.routes)}
    return sorted(methods | {"OPTIONS"}) if methods else []


def register(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        broken = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if broken is not None:
            where = (broken.get("ctx") or {}).get("error", "")
            return error_response(400, "bad_request", f"the request body is not valid JSON{f': {where}' if where else ''}")
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", ""),
                   **({"input": e["input"]} if "input" in e else {})} for e in errors]
        return JSONResponse({"detail": encodable(detail)}, status_code=422)

    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError):
        # same shape as FastAPI's own validation errors, so clients parse one format
        body = {"detail": [{"loc": list(exc.loc), "msg": exc.message, "type": exc.code}]}
        return JSONResponse(encodable(body), status_code=422)

    @app.exception_handler(ServiceError)
    async def _domain(_: Request, exc: ServiceError):
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
        extra = dict(needs=exc.needs, owner=exc.owner) if isinstance(exc, ForbiddenError) else {}
        return error_response(exc.status_code, exc.code, exc.message, headers, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        """Unknown paths (404), wrong methods (405, with every allowed method) and OPTIONS."""
        if exc.status_code == 405:
            allow = ", ".join(allowed_methods(request))
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": allow})
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; allowed: {allow}",
                                  {"Allow": allow})
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no such path: {request.url.path}"
        return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "error"), message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal server error")
