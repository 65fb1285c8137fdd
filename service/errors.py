"""Errors the service raises, and the one place that turns every error into JSON.

Every error response has the body `{"error": {"type": str, "message": str}}`
(validation errors add `details`). Domain errors from `model` and `index` map
to 4xx; anything unexpected becomes a 500 with a generic message and is logged,
never echoed. A client that goes away mid-request is not a server fault: one debug
line, and status 499 for the metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from index.errors import (
    DuplicateId,
    InvalidItem,
    InvalidQuery,
    InvalidVector,
    ItemNotFound,
    PreviewNotFound,
    StoreError,
    StoreUnavailable,
)
from model.errors import InvalidInput, MissingModality, ModelError

logger = logging.getLogger("mmembed.service")

# nginx's "client closed request": never reaches the client (it is gone), but the
# metrics middleware counts it under its own label rather than as a server error.
CLIENT_CLOSED_REQUEST = 499


class ServiceError(Exception):
    """An error with an HTTP status, a short machine-readable type and a message for people."""

    status_code = 400
    error_type = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    status_code = 400
    error_type = "invalid_request"


class CorruptMedia(ServiceError):
    status_code = 400
    error_type = "corrupt_media"


class TruncatedMedia(CorruptMedia):
    error_type = "truncated_media"


class AudioTooShort(ServiceError):
    status_code = 400
    error_type = "audio_too_short"


class UnsupportedMedia(ServiceError):
    status_code = 415
    error_type = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    status_code = 413
    error_type = "payload_too_large"


class AudioTooLong(PayloadTooLarge):
    error_type = "audio_too_long"


class ModalityUnavailable(ServiceError):
    status_code = 400
    error_type = "modality_unavailable"


class Unauthorized(ServiceError):
    status_code = 401
    error_type = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Overloaded(ServiceError):
    status_code = 429
    error_type = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class NotReady(ServiceError):
    status_code = 503
    error_type = "not_ready"


class RequestTimedOut(ServiceError):
    status_code = 504
    error_type = "timeout"


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message, **extra}}


def error_response(
    status_code: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(error_type, message), status_code=status_code, headers=headers)


def _domain_error(exc: Exception) -> tuple[int, str] | None:
    """Status and type for errors raised by `model` and `index`, None for unknown ones."""
    if isinstance(exc, ItemNotFound):
        return 404, "not_found"
    if isinstance(exc, PreviewNotFound):
        return 404, "preview_not_found"
    if isinstance(exc, StoreUnavailable):
        return 503, "index_unavailable"
    if isinstance(exc, DuplicateId):
        return 409, "duplicate_id"
    if isinstance(exc, InvalidQuery):
        return 400, "invalid_query"
    if isinstance(exc, InvalidItem):
        return 400, "invalid_item"
    if isinstance(exc, MissingModality):
        return 400, "modality_unavailable"
    if isinstance(exc, InvalidInput):
        return 400, "invalid_input"
    return None


def _message(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def client_disconnected(request: Request) -> Response:
    logger.debug(
        "client disconnected before its request was read: %s %s",
        request.method,
        request.url.path,
    )
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the same JSON shape."""

    @app.exception_handler(ClientDisconnect)
    async def _client_disconnect(request: Request, exc: ClientDisconnect) -> Response:
        return client_disconnected(request)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status_code, exc.error_type, exc.message, exc.headers)

    @app.exception_handler(ModelError)
    async def _model_error(request: Request, exc: ModelError) -> JSONResponse:
        return _mapped(request, exc)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return _mapped(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {k: v for k, v in err.items() if k in ("loc", "msg", "type")} for err in exc.errors()
        ]
        body = error_body(
            "validation_error", _validation_message(errors), details=jsonable_encoder(errors)
        )
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        cause = exc.__cause__
        if isinstance(cause, ClientDisconnect):  # FastAPI wraps it while parsing a body
            return client_disconnected(request)
        if isinstance(cause, ServiceError):  # e.g. the body limit, hit while FastAPI parsed JSON
            return error_response(cause.status_code, cause.error_type, cause.message, cause.headers)
        error_type = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, error_type, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error; see the server log")


def _mapped(request: Request, exc: Exception) -> JSONResponse:
    mapped = _domain_error(exc)
    if mapped is None:
        if isinstance(exc, InvalidVector):
            logger.error("the service built an invalid vector: %s", exc)
        logger.exception("unexpected domain error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error; see the server log")
    status, error_type = mapped
    if status == 503:
        logger.warning("index unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(status, error_type, _message(exc), {"Retry-After": "1"})
    return error_response(status, error_type, _message(exc))
