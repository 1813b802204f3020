"""Domain errors -> HTTP, mapped once. Bodies are stable JSON; never a traceback."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.errors import AuthError, ServiceError, SpecError

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES = {
    401: {"model": ErrorResponse, "description": "missing or invalid API token"},
    404: {"model": ErrorResponse, "description": "not found"},
    409: {"model": ErrorResponse, "description": "conflict"},
    413: {"model": ErrorResponse, "description": "body too large"},
}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def register(app: FastAPI) -> None:
    @app.exception_handler(SpecError)
    async def _spec(_: Request, exc: SpecError):
        # same shape as FastAPI's own validation errors, so clients parse one format
        return JSONResponse({"detail": [{"loc": list(exc.loc), "msg": exc.message, "type": exc.code}]}, status_code=422)

    @app.exception_handler(ServiceError)
    async def _domain(_: Request, exc: ServiceError):
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
        return error_response(exc.status_code, exc.code, exc.message, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal server error")
