"""The one table from the domain's error kinds to the OpenAI-style wire's ``(status, type, code, message)``,
and the code that writes its error bodies.

A refused request answers ``{"error": {"message", "type", "param", "code"}}`` with the status; the openai SDK
turns 400 into ``BadRequestError``, 401 ``AuthenticationError``, 404 ``NotFoundError``, 409 ``ConflictError``,
429 ``RateLimitError`` and 5xx ``InternalServerError``. A failed video carries the same code and message in
its ``error`` (with HTTP 200). Where a domain error has a detail (which image, which limit), the detail is
the message; otherwise the table's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from videosynth.errors import ErrorKind, QuotaExceeded, VideosynthError
from videosynth.ids import uuid4_text
from videosynth.tasks.models import Task, TaskStatus

log = logging.getLogger(__name__)

INVALID = "invalid_request_error"
SERVER = "server_error"
#: What OpenAI's own rate limits say: ``type`` names what ran out.
REQUESTS = "requests"


@dataclass(frozen=True)
class WireError:
    status: int
    type: str
    code: str | None
    message: str
    param: str | None = None


INTERNAL_MESSAGE = "The server had an error while processing your request. Sorry about that!"

ERRORS: dict[ErrorKind, WireError] = {
    ErrorKind.INTERNAL: WireError(500, SERVER, "internal_error", INTERNAL_MESSAGE),
    ErrorKind.INVALID_REQUEST: WireError(400, INVALID, "invalid_value", "The request is not valid."),
    ErrorKind.MISSING_API_KEY: WireError(
        401,
        INVALID,
        "missing_api_key",
        "You didn't provide an API key. You need to provide your API key in an Authorization header using "
        "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    ),
    ErrorKind.UNKNOWN_API_KEY: WireError(401, INVALID, "invalid_api_key", "Incorrect API key provided."),
    ErrorKind.MODEL_NOT_FOUND: WireError(
        400, INVALID, "model_not_found", "The model does not exist on this server.", "model"
    ),
    ErrorKind.UNSUPPORTED_MEDIA_URL: WireError(
        400,
        INVALID,
        "invalid_url",
        "An input_reference image_url must be an http(s):// URL or a data:image/... URL.",
        "input_reference",
    ),
    ErrorKind.NOT_CANCELABLE: WireError(409, INVALID, "not_cancelable", "The video is already finished."),
    ErrorKind.PAYLOAD_TOO_LARGE: WireError(
        413, INVALID, "payload_too_large", "The request body is too large."
    ),
    ErrorKind.IDEMPOTENCY_CONFLICT: WireError(
        409,
        INVALID,
        "idempotency_key_reused",
        "This Idempotency-Key was used for a different request within the last 24 hours.",
    ),
    ErrorKind.RATE_LIMITED: WireError(
        429, REQUESTS, "rate_limit_exceeded", "Rate limit reached for requests; please try again later."
    ),
    ErrorKind.QUEUE_FULL: WireError(
        429, REQUESTS, "rate_limit_exceeded", "Too many videos are queued for this key; try again later."
    ),
    ErrorKind.STORAGE_QUOTA: WireError(
        429,
        REQUESTS,
        "storage_quota_exceeded",
        "Stored reference quota exceeded: wait for earlier videos to finish, or send images as URLs.",
    ),
    ErrorKind.MEDIA_UNUSABLE: WireError(
        400, INVALID, "invalid_input_reference", "A reference image cannot be used.", "input_reference"
    ),
    ErrorKind.MEDIA_DOWNLOAD_FAILED: WireError(
        400, INVALID, "image_download_failed", "A reference image could not be downloaded.", "input_reference"
    ),
    ErrorKind.MEDIA_CONNECTION_REFUSED: WireError(
        400,
        INVALID,
        "image_download_failed",
        "The server of a reference image refused the connection.",
        "input_reference",
    ),
    ErrorKind.MEDIA_TIMEOUT: WireError(
        400,
        INVALID,
        "image_download_timeout",
        "A reference image took too long to download.",
        "input_reference",
    ),
    ErrorKind.MEDIA_FORBIDDEN_ADDRESS: WireError(
        400,
        INVALID,
        "invalid_url",
        "A reference image URL resolves to an address that is not publicly routable.",
        "input_reference",
    ),
    ErrorKind.NOT_FOUND: WireError(404, INVALID, "not_found", "Not found."),
    ErrorKind.MEDIA_NOT_FOUND: WireError(
        400, INVALID, "image_not_found", "A reference image was not found.", "input_reference"
    ),
    ErrorKind.IMAGE_FORMAT: WireError(
        400,
        INVALID,
        "invalid_image_format",
        "Invalid file format, the image must be JPEG, PNG or WEBP.",
        "input_reference",
    ),
    ErrorKind.IMAGE_SIZE: WireError(
        400, INVALID, "image_too_large", "The image file is too large.", "input_reference"
    ),
    ErrorKind.IMAGE_RESOLUTION: WireError(
        400, INVALID, "invalid_image_resolution", "The image resolution is invalid.", "input_reference"
    ),
    ErrorKind.ENGINE_FAILED: WireError(500, SERVER, "generation_failed", "The video could not be generated."),
    ErrorKind.ENGINE_CRASHED: WireError(
        500, SERVER, "generation_failed", "The engine process exited unexpectedly; out of memory?"
    ),
    ErrorKind.ENGINE_OUTPUT: WireError(
        500, SERVER, "generation_failed", "The engine's video did not match the request."
    ),
    ErrorKind.ENGINE_OUT_OF_MEMORY: WireError(
        500,
        SERVER,
        "out_of_memory",
        "The GPU ran out of memory for this request; try a smaller size, fewer seconds or fewer reference"
        " images.",
    ),
    ErrorKind.TIMEOUT: WireError(500, SERVER, "timeout", "The video was not finished in time."),
    ErrorKind.WORKER_LOST: WireError(500, SERVER, "internal_error", INTERNAL_MESSAGE),
    # Not an OpenAI status: a canceled video is reported as failed with this code.
    ErrorKind.CANCELED: WireError(400, INVALID, "canceled", "The video was canceled."),
    ErrorKind.STORE_UNAVAILABLE: WireError(
        503,
        SERVER,
        "service_unavailable",
        "The task store is temporarily unavailable, please try again later.",
    ),
    ErrorKind.STORAGE_UNAVAILABLE: WireError(
        503, SERVER, "storage_unavailable", "The video could not be stored or read, please try again later."
    ),
    ErrorKind.UPSTREAM_FAILED: WireError(
        500, SERVER, "generation_failed", "The upstream service failed the video."
    ),
    ErrorKind.UPSTREAM_UNAVAILABLE: WireError(
        500, SERVER, "upstream_unavailable", "The upstream service could not be reached."
    ),
    ErrorKind.UPSTREAM_TASK_LOST: WireError(
        500, SERVER, "upstream_task_lost", "The upstream service no longer knows the video."
    ),
    ErrorKind.UPSTREAM_SUBMIT_LOST: WireError(
        500,
        SERVER,
        "upstream_submit_lost",
        "The upstream's answer to the submit was lost; the video was not submitted again, to avoid a duplicate.",
    ),
    ErrorKind.UPSTREAM_REFUSED: WireError(
        500, SERVER, "upstream_refused", "The upstream service refused the video."
    ),
    ErrorKind.UPSTREAM_RESULT: WireError(
        500, SERVER, "upstream_result_unusable", "The upstream's video could not be downloaded."
    ),
}


class WireRefusal(Exception):
    """A refusal in this wire's own terms: a parameter named, a video not found."""

    def __init__(self, error: WireError) -> None:
        super().__init__(error.message)
        self.error = error


def bad_param(param: str, message: str, code: str = "invalid_value") -> WireRefusal:
    return WireRefusal(WireError(400, INVALID, code, message, param))


def video_not_found(video_id: str) -> WireRefusal:
    return WireRefusal(
        WireError(404, INVALID, "video_not_found", f"No video found with id '{video_id[:100]}'.", "video_id")
    )


def wire_error(exc: VideosynthError) -> WireError:
    entry = ERRORS[exc.kind]
    return WireError(entry.status, entry.type, entry.code, exc.detail or entry.message, entry.param)


def video_failure(task: Task) -> tuple[str, str]:
    """``(error.code, error.message)`` of a failed (or canceled) video."""
    if task.status is TaskStatus.CANCELED:
        entry = ERRORS[ErrorKind.CANCELED]
        return entry.code or "canceled", entry.message
    if task.error_kind is None and task.legacy_error is not None:
        return ERRORS[ErrorKind.INTERNAL].code or "internal_error", task.legacy_error[1]
    entry = ERRORS[task.error_kind or ErrorKind.INTERNAL]
    return entry.code or "internal_error", task.error_detail or entry.message


def request_id(request: Request) -> str:
    scope = request.scope
    rid: str | None = scope.get("videosynth.request_id")
    if rid is None:
        rid = scope["videosynth.request_id"] = uuid4_text()
    return rid


def json_response(
    request: Request, body: Mapping[str, object], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    headers = {"x-request-id": request_id(request), **(headers or {})}
    if 400 <= status < 500 and status != 429:
        # The SDK retries 408 and 409 by itself: a refusal that a retry would meet again says so.
        headers["x-should-retry"] = "false"
    content = orjson.dumps(body)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def error_response(request: Request, error: WireError, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return json_response(request, body, error.status, headers)


def render_exception(request: Request, exc: Exception) -> Response:
    """The OpenAI-style answer to any exception that escaped a route of this dialect (or matched none)."""
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
        where = f"{request.method} {request.url.path[:200]}"
        if exc.status_code == 404:
            return error_response(request, WireError(404, INVALID, None, f"Invalid URL ({where})"))
        if exc.status_code == 405:
            return error_response(
                request, WireError(405, INVALID, "method_not_allowed", f"Method not allowed ({where})")
            )
        return error_response(request, WireError(exc.status_code, INVALID, None, str(exc.detail)))
    log.exception("unexpected error", exc_info=exc)
    return error_response(request, ERRORS[ErrorKind.INTERNAL])


def openai_endpoint(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` answering every exception in the OpenAI error shape, never with a traceback page (a
    plain Starlette route, as the DashScope dialect's: bodies are parsed here, by hand)."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:  # noqa: BLE001 - every failure gets an OpenAI-style body
            return render_exception(request, exc)

    return answer
