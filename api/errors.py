"""One error base, one handler, one response shape: {"error": {code, message, details}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API answers with: status, machine-readable code, message, details."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if code:
            self.code = code


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Unprocessable(ApiError):
    status_code = 422
    code = "validation_error"

    @classmethod
    def field(cls, field: str, message: str) -> Unprocessable:
        """A 422 naming one field."""
        return cls(f"{field}: {message}", details=[{"field": field, "message": message}])


class ErrorInfo(BaseModel):
    """What went wrong: a machine-readable code, a message, optional details."""

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The one error shape, as documented in the OpenAPI schema."""

    error: ErrorInfo


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "the body is not valid JSON",
    401: "missing or invalid bearer token",
    403: "an admin token is required",
    404: "not found (another customer's resources are not found either)",
    409: "conflicts with the current state, or the Idempotency-Key is in use",
    413: "the request body is too large",
    422: "invalid input; details name each field",
    503: "the database is unavailable; retry after Retry-After",
}


def error_responses(
    *statuses: int, described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for error statuses, each with the one error shape."""
    texts = {**ERROR_DESCRIPTIONS, **(described or {})}
    return {status: {"model": ErrorBody, "description": texts[status]} for status in statuses}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    """The JSON error body every failure uses."""
    body = {"error": {"code": code, "message": message, "details": details}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def database_unavailable(exc: Exception) -> Response:
    """503 with Retry-After: the database cannot be reached right now.

    A transaction the database aborted because of a concurrent one (deadlock, serialization
    failure) is a 409 the client may simply retry, not an outage.
    """
    if isinstance(getattr(exc, "orig", None), psycopg.errors.TransactionRollback):
        log.warning("transaction aborted by a concurrent one: %s", type(exc).__name__)
        return error_response(
            409,
            "concurrent_update",
            "a concurrent change to the same objects won; retry the request",
            headers={"Retry-After": "1"},
        )
    log.warning("database unavailable: %s", type(exc).__name__)
    return error_response(
        503,
        "database_unavailable",
        "the database is unavailable; retry shortly",
        headers={"Retry-After": "5"},
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        details = []
        for err in exc.errors():
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            details.append({"field": _field_name(tuple(err.get("loc", ()))), "message": message})
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return error_response(422, "validation_error", summary or "invalid request", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def _database_down(_: Request, exc: Exception) -> Response:
        return database_unavailable(exc)

    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(PoolTimeout, _database_down)
    app.add_exception_handler(InterfaceError, _database_down)

    @app.exception_handler(DBAPIError)
    async def _dbapi(request: Request, exc: DBAPIError) -> Response:
        if exc.connection_invalidated:
            return await _database_down(request, exc)
        log.exception("database error")
        return error_response(500, "internal_error", "internal error")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
