"""One error base for the API: every refusal is an `ApiError` with a status and a stable code.

Each 4xx body has the same shape, readable by a person and by a program::

    {"error": {"code": "limit_exceeded", "message": "what went wrong and how to fix it",
               "details": {...}}}

FastAPI's own refusals (validation, unknown routes) are translated into it here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tenantry.api")


class ApiError(Exception):
    """An expected refusal: a status, a stable `code`, a sentence for people, details."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code  # type: ignore[misc]  # a narrower code on one instance

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


class BadRequest(ApiError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    status_code = 422
    code = "invalid_request"


class QuotaExceeded(ApiError):
    status_code = 429
    code = "limit_exceeded"


class TooManyRequests(ApiError):
    status_code = 429
    code = "too_many_requests"


class BadGateway(ApiError):
    """A service Tenantry relies on (Stripe) refused a request Tenantry made for this one."""

    status_code = 502
    code = "bad_gateway"


class Unavailable(ApiError):
    status_code = 503
    code = "service_unavailable"


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable reason, e.g. `invalid_api_key`.")
    message: str = Field(description="What went wrong and how to fix it, for people.")
    details: dict[str, Any] = Field(default_factory=dict, description="Structured specifics.")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: bytes) -> M:
    """A JSON body read by hand, refused with the same 422 as FastAPI's own validation."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from error


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def responses(*errors: type[ApiError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route may answer with."""
    return {
        e.status_code: {"model": ErrorBody, "description": _describe(e.status_code)} for e in errors
    }


def _describe(status: int) -> str:
    return {
        400: "The request is malformed.",
        401: "Missing or invalid credentials.",
        403: "The credentials lack the scope this needs, or the subscription has ended.",
        404: "Not found.",
        409: "Not possible in the current state; retry later.",
        413: "The body is too large.",
        422: "The request failed validation.",
        429: "Over a plan's limit, or too many requests from one address.",
        502: "Stripe refused a request made for this one; its message says why.",
        503: "A dependency is unavailable; retry later.",
    }.get(status, "Error.")


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


async def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [
        {"field": _location(e.get("loc", ())), "message": e.get("msg", "invalid")}
        for e in error.errors()
    ]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    return JSONResponse(
        error_body(
            "invalid_request",
            f"The request is not valid ({summary}). Fix the fields listed and send it again.",
            {"errors": problems},
        ),
        status_code=422,
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 404:
        body = error_body(
            "not_found",
            f"There is no {request.method} {request.url.path}; see /docs for the routes served.",
        )
    elif error.status_code == 405:
        body = error_body(
            "method_not_allowed",
            f"{request.method} is not allowed on {request.url.path}; see /docs.",
        )
    elif error.status_code == 400 and error.__cause__ is not None:
        # FastAPI's answer to a body it could not even decode (not UTF-8): a bad body,
        # answered as every other bad body is.
        return JSONResponse(
            error_body(
                "invalid_request",
                "The request is not valid (body: it is not JSON text in UTF-8). Send a JSON "
                "object encoded in UTF-8.",
                {"errors": [{"field": "body", "message": "not JSON text in UTF-8"}]},
            ),
            status_code=422,
        )
    else:
        body = error_body(f"http_{error.status_code}", str(error.detail))
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.error("Database unavailable on %s %s: %s", request.method, request.url.path, error)
    return JSONResponse(
        error_body(
            "database_unavailable",
            "The database is unavailable, so nothing could be recorded or read. Retry "
            "shortly: retries are safe, events count once per transaction id.",
        ),
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _database_refused(request: Request, error: Exception) -> JSONResponse:
    # Data checks happen before the database; what still reaches it and is refused
    # is the request's data (a value out of range, a character it cannot store).
    log.warning("Database refused data on %s %s: %s", request.method, request.url.path, error)
    if isinstance(error, DataError):
        return JSONResponse(
            error_body(
                "unstorable_value",
                "The database cannot store a value of this request (out of range, or a "
                "character it does not accept); nothing of it was counted. Check the values "
                "and properties sent.",
                {"reason": _first_line(error)},
            ),
            status_code=422,
        )
    return JSONResponse(
        error_body(
            "conflict",
            "The request conflicts with data already recorded; nothing of it was counted. "
            "Retry: retries are safe, events count once per transaction id.",
            {"reason": _first_line(error)},
        ),
        status_code=409,
    )


def _first_line(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    return str(original).strip().splitlines()[0] if str(original).strip() else type(error).__name__


async def _database_failed(request: Request, error: Exception) -> JSONResponse:
    # Not the request's data: the database or Redis failed it. Retrying is the answer.
    log.error("Storage failed on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse(
        error_body(
            "storage_error",
            "Storing or reading the data failed, so this request may not have been recorded. Retry "
            "shortly: retries are safe, events count once per transaction id.",
        ),
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    return unexpected(request.url.path, error, request.method)


def unexpected(path: str, error: Exception, method: str = "POST") -> JSONResponse:
    """The answer to a failure nobody foresaw: logged with its traceback, a 500."""
    log.exception("Failed %s %s", method, path, exc_info=error)
    return JSONResponse(
        error_body(
            "internal_error", "The server failed to handle the request; retry, or report it."
        ),
        status_code=500,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(DataError, _database_refused)
    app.add_exception_handler(IntegrityError, _database_refused)
    app.add_exception_handler(SQLAlchemyError, _database_failed)
    app.add_exception_handler(RedisError, _database_failed)
    app.add_exception_handler(Exception, _unexpected)
