"""The one table from the domain's error kinds to DashScope's ``(HTTP status, code, message)``, and the
code that writes DashScope error bodies.

A synchronous refusal is the triple itself: ``{"code", "message", "request_id"}`` with the status. A failed
task carries the same code and message in ``output.code`` / ``output.message`` (with HTTP 200). Where a
domain error has a detail (which image, which limit), the detail is the message; otherwise the table's
message, worded as the hosted service words it (typos included: clients match on them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from videosynth.errors import ErrorKind, QuotaExceeded, VideosynthError
from videosynth.ids import uuid4_text
from videosynth.tasks.models import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WireError:
    status: int
    code: str
    message: str


INTERNAL_MESSAGE = "An internal error has occured, please try again later or contact service support."
INVALID_PARAMETER_MESSAGE = "Required parameter missing or invalid, please check the request parameters."

ERRORS: dict[ErrorKind, WireError] = {
    ErrorKind.INTERNAL: WireError(500, "InternalError", INTERNAL_MESSAGE),
    ErrorKind.INVALID_REQUEST: WireError(400, "InvalidParameter", INVALID_PARAMETER_MESSAGE),
    ErrorKind.MISSING_API_KEY: WireError(401, "InvalidApiKey", "No API-key provided."),
    ErrorKind.UNKNOWN_API_KEY: WireError(401, "InvalidApiKey", "Invalid API-key provided."),
    ErrorKind.MODEL_NOT_FOUND: WireError(400, "InvalidParameter", "Model not exist."),
    # The wire note's row for an unusable URL scheme uses the OpenAI-style code.
    ErrorKind.UNSUPPORTED_MEDIA_URL: WireError(
        400,
        "invalid_parameter_error",
        "InternalError.Algo.InvalidParameter: The provided URL does not appear to be valid. "
        "Ensure it is correctly formatted.",
    ),
    ErrorKind.NOT_CANCELABLE: WireError(
        400,
        "UnsupportedOperation",
        "Failed to cancel the task, please confirm if the task is in PENDING status.",
    ),
    ErrorKind.PAYLOAD_TOO_LARGE: WireError(413, "InvalidParameter", "The request body is too large."),
    # Our extension (the hosted service takes no Idempotency-Key); 409 as Stripe and the IETF draft answer it.
    ErrorKind.IDEMPOTENCY_CONFLICT: WireError(
        409,
        "InvalidParameter.IdempotencyKey",
        "This Idempotency-Key was used for a different request within the last 24 hours.",
    ),
    # The hosted service's throttling codes and words; SDK v2 maps Throttling* to RateLimitError and retries
    # after Retry-After.
    ErrorKind.RATE_LIMITED: WireError(
        429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."
    ),
    ErrorKind.QUEUE_FULL: WireError(
        429, "Throttling.AllocationQuota", "Allocated quota exceeded, please increase your quota limit."
    ),
    ErrorKind.STORAGE_QUOTA: WireError(
        429,
        "Throttling.AllocationQuota",
        "Stored reference quota exceeded: wait for earlier tasks and uploads to expire, or send images as URLs.",
    ),
    ErrorKind.MEDIA_UNUSABLE: WireError(
        400, "InvalidParameter", "The media format is not supported or incorrect for the data inspection."
    ),
    ErrorKind.MEDIA_DOWNLOAD_FAILED: WireError(400, "InvalidURL", "Invalid URL provided in your request."),
    # Our extension's resources (webhooks, deliveries); the same words as an unrouted path.
    ErrorKind.NOT_FOUND: WireError(404, "NotFound", "Not found!"),
    ErrorKind.MEDIA_CONNECTION_REFUSED: WireError(
        400, "InvalidURL.ConnectionRefused", "Connection refused, please provide available URL."
    ),
    ErrorKind.MEDIA_TIMEOUT: WireError(
        400, "InvalidURL.Timeout", "Download timeout, please check network connection."
    ),
    ErrorKind.MEDIA_FORBIDDEN_ADDRESS: WireError(
        400, "InvalidURL", "The media URL resolves to an address that is not publicly routable."
    ),
    ErrorKind.MEDIA_NOT_FOUND: WireError(
        400, "InvalidURL", "Failed to find the requested media resource during the data inspection process."
    ),
    ErrorKind.IMAGE_FORMAT: WireError(
        400, "InvalidFile.Format", "Invalid file format, the image must be JPEG, PNG or WEBP."
    ),
    ErrorKind.IMAGE_SIZE: WireError(
        400, "InvalidFile.Size", "Invalid file size. The image file size must be less than 20MB."
    ),
    ErrorKind.IMAGE_RESOLUTION: WireError(400, "InvalidFile.Resolution", "The image resolution is invalid."),
    ErrorKind.ENGINE_FAILED: WireError(
        500, "InternalError.Algo", "An internal error has occured during algorithm execution."
    ),
    ErrorKind.ENGINE_CRASHED: WireError(
        500, "InternalError.Algo", "The engine process exited unexpectedly; out of memory?"
    ),
    ErrorKind.ENGINE_OUTPUT: WireError(
        500, "InternalError.Algo", "The engine's video did not match the request."
    ),
    # DashScope has no code of its own for this; clients switch on InternalError.Algo, people read the message.
    ErrorKind.ENGINE_OUT_OF_MEMORY: WireError(
        500,
        "InternalError.Algo",
        "The GPU ran out of memory for this request; try a lower resolution, a shorter duration or fewer"
        " reference images.",
    ),
    ErrorKind.TIMEOUT: WireError(
        500,
        "InternalError.Timeout",
        "An internal timeout error has occured during execution, please try again later or contact service "
        "support.",
    ),
    ErrorKind.WORKER_LOST: WireError(500, "InternalError", INTERNAL_MESSAGE),
    ErrorKind.CANCELED: WireError(400, "Canceled", "The task was canceled."),
    ErrorKind.STORE_UNAVAILABLE: WireError(
        503, "ServiceUnavailable", "The task store is temporarily unavailable, please try again later."
    ),
    # As a task failure this is a result that could not be stored: the hosted service's upload error.
    ErrorKind.STORAGE_UNAVAILABLE: WireError(503, "InternalError.Upload", "Failed to upload result."),
    # A relayed task: the upstream's own code and message are shown where it sent them (task_failure); these
    # are the words when it sent none, and the codes of what went wrong between us and it.
    ErrorKind.UPSTREAM_FAILED: WireError(500, "InternalError.Algo", "The upstream service failed the task."),
    ErrorKind.UPSTREAM_UNAVAILABLE: WireError(
        500, "InternalError.Upstream", "The upstream service could not be reached, please try again later."
    ),
    ErrorKind.UPSTREAM_TASK_LOST: WireError(
        500, "InternalError.UpstreamTaskLost", "The upstream service no longer knows the task."
    ),
    ErrorKind.UPSTREAM_SUBMIT_LOST: WireError(
        500,
        "InternalError.UpstreamSubmitLost",
        "The upstream's answer to the submit was lost; the task was not submitted again, to avoid a"
        " duplicate.",
    ),
    ErrorKind.UPSTREAM_REFUSED: WireError(
        500, "InternalError.UpstreamRefused", "The upstream service refused the task."
    ),
    ErrorKind.UPSTREAM_RESULT: WireError(
        500, "InternalError.Download", "The upstream's video could not be downloaded."
    ),
}


class WireRefusal(Exception):
    """A refusal that exists only on this wire (a missing DashScope header, a bad upload signature)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.error = WireError(status, code, message)


ASYNC_REQUIRED = WireError(403, "AccessDenied", "current user api does not support synchronous calls.")
BODY_INVALID = WireError(
    400, "InvalidParameter", "Required body invalid, please check the request body format."
)
NOT_FOUND = WireError(404, "NotFound", "Not found!")
METHOD_NOT_ALLOWED = WireError(405, "MethodNotAllowed", "Method not allowed.")


def wire_error(exc: VideosynthError) -> WireError:
    entry = ERRORS[exc.kind]
    return WireError(entry.status, entry.code, exc.detail or entry.message)


def task_failure(task: Task) -> tuple[str, str]:
    """``(output.code, output.message)`` of a FAILED task."""
    if task.error_kind is None and task.legacy_error is not None:
        return task.legacy_error  # written in this wire's words by schema 1
    entry = ERRORS[task.error_kind or ErrorKind.INTERNAL]
    if task.upstream_code:  # a relay's upstream failure, passed on in the upstream's own words
        return task.upstream_code, task.error_detail or entry.message
    return entry.code, task.error_detail or entry.message


def request_id(request: Request) -> str:
    # In the ASGI scope itself: Starlette's request.state costs more than making the id.
    scope = request.scope
    rid: str | None = scope.get("videosynth.request_id")
    if rid is None:
        rid = scope["videosynth.request_id"] = uuid4_text()
    return rid


def json_response(
    request: Request, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    rid = request_id(request)
    headers = {"x-request-id": rid, **(headers or {})}
    if 400 <= status < 500 and status != 429:
        # SDK v2 retries some statuses even for submit; a deterministic refusal must not be retried. A 429
        # is worth retrying, after its Retry-After.
        headers["x-should-retry"] = "false"
    # orjson: about 1 us for a task answer against 16 us for json.dumps, on every poll.
    content = orjson.dumps({"request_id": rid, **body})
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def error_response(request: Request, error: WireError, headers: dict[str, str] | None = None) -> Response:
    return json_response(request, {"code": error.code, "message": error.message}, error.status, headers)


def render_exception(request: Request, exc: Exception) -> Response:
    """The DashScope answer to any exception that escaped a route of this dialect."""
    if isinstance(exc, VideosynthError):
        error = wire_error(exc)
        if error.status >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        if isinstance(exc, QuotaExceeded):
            return error_response(request, error, {"retry-after": str(exc.retry_after_s)})
        return error_response(request, error)
    if isinstance(exc, WireRefusal):
        return error_response(request, exc.error)
    if isinstance(exc, RequestValidationError):
        return error_response(request, ERRORS[ErrorKind.INVALID_REQUEST])
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(request, NOT_FOUND)
        if exc.status_code == 405:
            return error_response(request, METHOD_NOT_ALLOWED)
        return error_response(request, WireError(exc.status_code, "InvalidParameter", str(exc.detail)))
    log.exception("unexpected error", exc_info=exc)
    return error_response(request, ERRORS[ErrorKind.INTERNAL])


def dashscope_endpoint(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` answering every exception in DashScope's error shape, never with a traceback page.

    The dialect's routes are plain Starlette routes around such endpoints: they take the request as it is
    (bodies are parsed and checked here, by hand), so FastAPI's per-request dependency solving would buy
    nothing and cost about a fifth of a poll's server time (measured, docs/benchmarks.md)."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:  # noqa: BLE001 - every failure gets a DashScope body
            return render_exception(request, exc)

    return answer
