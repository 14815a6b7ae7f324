"""The one table from exceptions to HTTP statuses, and the handlers that write DashScope error bodies."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from videosynth.errors import (
    AsyncRequired,
    InvalidApiKey,
    InvalidUrl,
    ModelNotFound,
    RequestError,
    StoreError,
    UnsupportedOperation,
    VideosynthError,
)

log = logging.getLogger(__name__)

# Looked up along the exception's MRO, so a subclass inherits its parent's status.
HTTP_STATUS: dict[type[VideosynthError], int] = {
    RequestError: 400,
    InvalidApiKey: 401,
    AsyncRequired: 403,
    ModelNotFound: 400,
    InvalidUrl: 400,
    UnsupportedOperation: 400,
    StoreError: 503,
    VideosynthError: 500,
}

WIRE_CODE_OVERRIDES: dict[type[VideosynthError], str] = {
    # The wire note's row for an unusable URL scheme uses the OpenAI-style code.
    InvalidUrl: "invalid_parameter_error",
}


def request_id(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = str(uuid.uuid4())
        request.state.request_id = rid
    return rid


def json_response(request: Request, body: dict[str, Any], status: int = 200) -> JSONResponse:
    rid = request_id(request)
    headers = {"x-request-id": rid}
    if 400 <= status < 500:
        # SDK v2 retries some statuses even for submit; a deterministic refusal must not be retried.
        headers["x-should-retry"] = "false"
    return JSONResponse({"request_id": rid, **body}, status_code=status, headers=headers)


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    return json_response(request, {"code": code, "message": message}, status)


def status_for(exc: VideosynthError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def code_for(exc: VideosynthError) -> str:
    for cls in type(exc).__mro__:
        if cls in WIRE_CODE_OVERRIDES:
            return WIRE_CODE_OVERRIDES[cls]
    return exc.code


def install(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VideosynthError)
        status = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        return error_response(request, status, code_for(exc), exc.message)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(request, 404, "NotFound", "Not found!")
        if exc.status_code == 405:
            return error_response(request, 405, "MethodNotAllowed", "Method not allowed.")
        return error_response(request, exc.status_code, "InvalidParameter", str(exc.detail))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            request, 400, "InvalidParameter", "Required parameter missing or invalid, please check the request parameters."
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error_response(
            request,
            500,
            "InternalError",
            "An internal error has occured, please try again later or contact service support.",
        )

    app.add_exception_handler(VideosynthError, on_domain_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
