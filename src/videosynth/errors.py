"""The one exception hierarchy of videosynth, in the domain's own terms.

Every error carries an :class:`ErrorKind`: what went wrong, independent of any wire. A failed task stores
its kind and a detail; each API dialect (``videosynth.api.dashscope``, ...) turns a kind into its own
status, code and message in one table. Errors raised while a task runs are recorded on the task, never
turned into HTTP errors.

    VideosynthError
    ├── RequestError                 refused at once, no task is created
    │   ├── InvalidRequest           bad body, field or value
    │   ├── NotFound                 a webhook or delivery that is not this account's
    │   ├── MissingApiKey            no bearer token
    │   ├── UnknownApiKey            unknown or revoked token
    │   ├── ModelNotFound            unknown model name
    │   ├── UnsupportedMediaUrl      a media URL scheme we do not fetch
    │   ├── NotCancelable            cancel of a finished, unknown or foreign task
    │   ├── PayloadTooLarge          a body or reference over its size cap
    │   ├── IdempotencyConflict      an idempotency key reused for another request
    │   └── QuotaExceeded            a client's limit reached; try again later
    │       ├── RateLimited          too many requests per second
    │       ├── QueueFull            too many tasks waiting
    │       └── StorageQuotaExceeded too many bytes of references kept
    ├── MediaError                   a reference image is unusable (task FAILED)
    │   ├── MediaDownloadFailed      the download failed
    │   │   ├── MediaConnectionRefused
    │   │   ├── MediaTimeout
    │   │   ├── ForbiddenAddress     the URL resolves to a private / loopback / reserved address
    │   │   └── MediaNotFound        an uploaded file that does not exist (or is another account's)
    │   ├── InvalidImageFormat       not JPEG / PNG / WEBP, or undecodable
    │   ├── InvalidImageSize         over the byte cap
    │   └── InvalidImageResolution   short side too small, or too many pixels
    ├── EngineError                  the engine failed (task FAILED)
    │   └── EngineCrashed            the engine process died
    │   └── UpstreamError            a relay's upstream service (task FAILED)
    │       ├── UpstreamFailed       the upstream task FAILED: its own code and message
    │       ├── UpstreamUnavailable  5xx / unreachable for longer than the relay's bound
    │       │   ├── UpstreamThrottled  429: slow down (never a failure by itself)
    │       │   └── SubmitAnswerLost   a submit's answer did not arrive: look for the task upstream
    │       ├── UpstreamTaskLost     the upstream no longer knows the task (UNKNOWN past the bound)
    │       ├── UpstreamSubmitLost   a submit's answer was lost and the task cannot be found upstream
    │       ├── UpstreamRefused      the upstream refused the submit (4xx: key, quota, parameters)
    │       └── UpstreamResultUnusable  the upstream's video could not be downloaded or is not an MP4
    ├── TaskTimeout                  not finished in time
    ├── Canceled                     cooperative stop of a running generation
    ├── StoreError                   the task store is unavailable
    └── StorageUnavailable           the object storage is unavailable (a result could not be stored)
"""

from __future__ import annotations

import enum
import re


class ErrorKind(enum.StrEnum):
    """What went wrong. The values are stored on failed tasks: never rename one, only add."""

    INTERNAL = "internal"
    INVALID_REQUEST = "invalid_request"
    MISSING_API_KEY = "missing_api_key"
    UNKNOWN_API_KEY = "unknown_api_key"
    MODEL_NOT_FOUND = "model_not_found"
    UNSUPPORTED_MEDIA_URL = "unsupported_media_url"
    NOT_CANCELABLE = "not_cancelable"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"
    STORAGE_QUOTA = "storage_quota"
    MEDIA_UNUSABLE = "media_unusable"
    MEDIA_DOWNLOAD_FAILED = "media_download_failed"
    MEDIA_CONNECTION_REFUSED = "media_connection_refused"
    MEDIA_TIMEOUT = "media_timeout"
    MEDIA_FORBIDDEN_ADDRESS = "media_forbidden_address"
    MEDIA_NOT_FOUND = "media_not_found"
    IMAGE_FORMAT = "image_format"
    IMAGE_SIZE = "image_size"
    IMAGE_RESOLUTION = "image_resolution"
    ENGINE_FAILED = "engine_failed"
    ENGINE_CRASHED = "engine_crashed"
    ENGINE_OUTPUT = "engine_output"
    ENGINE_OUT_OF_MEMORY = "engine_out_of_memory"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    CANCELED = "canceled"
    STORE_UNAVAILABLE = "store_unavailable"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    UPSTREAM_FAILED = "upstream_failed"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TASK_LOST = "upstream_task_lost"
    UPSTREAM_SUBMIT_LOST = "upstream_submit_lost"
    UPSTREAM_REFUSED = "upstream_refused"
    UPSTREAM_RESULT = "upstream_result"
    NOT_FOUND = "not_found"


# An absolute path not inside a URL (a slash not preceded by a word character, a colon or another slash).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.+@%~-]+/)*[\w.+@%~-]+")
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def client_safe(text: str) -> str:
    """``text`` without absolute paths and errno markers, which tell a client about the server only."""
    return _ABSOLUTE_PATH.sub("<file>", _ERRNO.sub("", text))


class VideosynthError(Exception):
    """Something went wrong inside videosynth."""

    kind = ErrorKind.INTERNAL

    def __init__(self, detail: str | None = None) -> None:
        #: What a person should know about this occurrence (which image, which limit), or None when the
        #: kind says it all. Shown to clients, so scrubbed of server paths and errno markers here, whoever
        #: wrote it; internal storage keys and driver messages belong in the log, not in a detail.
        self.detail = client_safe(detail) if detail else None
        super().__init__(self.detail or (self.__doc__ or "").strip())


class RequestError(VideosynthError):
    """The request was refused before any task was created."""

    kind = ErrorKind.INVALID_REQUEST


class InvalidRequest(RequestError):
    """A body, field or value of the request is missing or invalid."""


class NotFound(RequestError):
    """A webhook or a task's delivery named by the request does not exist for this account."""

    kind = ErrorKind.NOT_FOUND


class MissingApiKey(RequestError):
    """The request carries no API key."""

    kind = ErrorKind.MISSING_API_KEY


class UnknownApiKey(RequestError):
    """The API key is unknown or revoked."""

    kind = ErrorKind.UNKNOWN_API_KEY


class ModelNotFound(RequestError):
    """No model of that name is served here."""

    kind = ErrorKind.MODEL_NOT_FOUND


class UnsupportedMediaUrl(RequestError):
    """A media URL uses a scheme that is not fetched (or an upload reference that was not enabled)."""

    kind = ErrorKind.UNSUPPORTED_MEDIA_URL


class NotCancelable(RequestError):
    """The task cannot be canceled: it is finished, unknown or another account's."""

    kind = ErrorKind.NOT_CANCELABLE


class PayloadTooLarge(RequestError):
    """The request body or one of its references is over its size cap."""

    kind = ErrorKind.PAYLOAD_TOO_LARGE


class IdempotencyConflict(RequestError):
    """An idempotency key already used, within its lifetime, for a different request."""

    kind = ErrorKind.IDEMPOTENCY_CONFLICT


class QuotaExceeded(RequestError):
    """A limit of the client's account or key is reached; the same request may succeed later."""

    kind = ErrorKind.RATE_LIMITED

    def __init__(self, detail: str | None = None, *, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        #: When trying again may succeed, in whole seconds.
        self.retry_after_s = max(1, retry_after_s)


class RateLimited(QuotaExceeded):
    """Too many requests in the last second."""

    kind = ErrorKind.RATE_LIMITED


class QueueFull(QuotaExceeded):
    """Too many tasks of this client are waiting to run."""

    kind = ErrorKind.QUEUE_FULL


class StorageQuotaExceeded(QuotaExceeded):
    """The client's uploads and inline references kept here are over its quota."""

    kind = ErrorKind.STORAGE_QUOTA


class MediaError(VideosynthError):
    """A reference image cannot be used."""

    kind = ErrorKind.MEDIA_UNUSABLE


class MediaDownloadFailed(MediaError):
    """A reference image could not be downloaded."""

    kind = ErrorKind.MEDIA_DOWNLOAD_FAILED


class MediaConnectionRefused(MediaDownloadFailed):
    """The server of a reference image refused the connection."""

    kind = ErrorKind.MEDIA_CONNECTION_REFUSED


class MediaTimeout(MediaDownloadFailed):
    """A reference image took too long to download."""

    kind = ErrorKind.MEDIA_TIMEOUT


class ForbiddenAddress(MediaDownloadFailed):
    """A media URL resolves to an address that is not publicly routable."""

    kind = ErrorKind.MEDIA_FORBIDDEN_ADDRESS


class MediaNotFound(MediaDownloadFailed):
    """An uploaded file named by the request does not exist or belongs to another account."""

    kind = ErrorKind.MEDIA_NOT_FOUND


class InvalidImageFormat(MediaError):
    """A reference image is not a JPEG, PNG or WEBP that can be decoded."""

    kind = ErrorKind.IMAGE_FORMAT


class InvalidImageSize(MediaError):
    """A reference image file is larger than allowed."""

    kind = ErrorKind.IMAGE_SIZE


class InvalidImageResolution(MediaError):
    """A reference image is too small or has too many pixels."""

    kind = ErrorKind.IMAGE_RESOLUTION


class EngineError(VideosynthError):
    """The engine failed to generate the video."""

    kind = ErrorKind.ENGINE_FAILED


class EngineCrashed(EngineError):
    """The engine process exited unexpectedly; out of memory?"""

    kind = ErrorKind.ENGINE_CRASHED


class EngineOutputInvalid(EngineError):
    """The engine's video did not match the request."""

    kind = ErrorKind.ENGINE_OUTPUT


class EngineOutOfMemory(EngineError):
    """The accelerator ran out of memory for this request; the engine freed what it held and goes on."""

    kind = ErrorKind.ENGINE_OUT_OF_MEMORY


class UpstreamError(EngineError):
    """A relay's upstream service did not produce the video."""

    kind = ErrorKind.UPSTREAM_FAILED

    def __init__(self, detail: str | None = None, *, upstream_code: str | None = None) -> None:
        super().__init__(detail)
        #: The upstream's own error code, kept as it sent it (a relay passes its upstream's failure on).
        self.upstream_code = upstream_code


class UpstreamFailed(UpstreamError):
    """The upstream service reported the task as failed."""

    kind = ErrorKind.UPSTREAM_FAILED


class UpstreamUnavailable(UpstreamError):
    """The upstream service kept answering errors or could not be reached."""

    kind = ErrorKind.UPSTREAM_UNAVAILABLE


class UpstreamThrottled(UpstreamUnavailable):
    """The upstream service asked us to slow down (HTTP 429): never a task failure by itself."""

    def __init__(self, detail: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class SubmitAnswerLost(UpstreamUnavailable):
    """A submit may have reached the upstream but its answer did not reach us (a timeout, a reset)."""

    kind = ErrorKind.UPSTREAM_SUBMIT_LOST


class UpstreamTaskLost(UpstreamError):
    """The upstream service no longer knows the task."""

    kind = ErrorKind.UPSTREAM_TASK_LOST


class UpstreamSubmitLost(UpstreamError):
    """A submit's answer was lost and the upstream's task could not be told apart from others."""

    kind = ErrorKind.UPSTREAM_SUBMIT_LOST


class UpstreamRefused(UpstreamError):
    """The upstream service refused the task."""

    kind = ErrorKind.UPSTREAM_REFUSED


class UpstreamResultUnusable(UpstreamError):
    """The upstream's video could not be downloaded or is not a video."""

    kind = ErrorKind.UPSTREAM_RESULT


class TaskTimeout(VideosynthError):
    """The task did not finish in time."""

    kind = ErrorKind.TIMEOUT


class Canceled(VideosynthError):
    """The task was canceled."""

    kind = ErrorKind.CANCELED


class StoreError(VideosynthError):
    """The task store is temporarily unavailable."""

    kind = ErrorKind.STORE_UNAVAILABLE


class StorageUnavailable(VideosynthError):
    """The object storage is temporarily unavailable."""

    kind = ErrorKind.STORAGE_UNAVAILABLE


_BY_KIND: dict[ErrorKind, type[VideosynthError]] = {}
for _cls in (
    VideosynthError, InvalidRequest, MissingApiKey, UnknownApiKey, ModelNotFound, UnsupportedMediaUrl,
    NotCancelable, PayloadTooLarge, IdempotencyConflict, RateLimited, QueueFull, StorageQuotaExceeded,
    QuotaExceeded, MediaError, MediaDownloadFailed, MediaConnectionRefused, MediaTimeout,
    ForbiddenAddress, MediaNotFound, InvalidImageFormat, InvalidImageSize, InvalidImageResolution,
    EngineError, EngineCrashed, EngineOutputInvalid, EngineOutOfMemory, UpstreamFailed, UpstreamUnavailable,
    UpstreamTaskLost, UpstreamSubmitLost, UpstreamRefused, UpstreamResultUnusable, TaskTimeout, Canceled,
    StoreError, StorageUnavailable, NotFound,
):  # fmt: skip
    _BY_KIND.setdefault(_cls.kind, _cls)


def error_for(kind: ErrorKind, detail: str | None = None) -> VideosynthError:
    """Rebuild the error of ``kind`` (e.g. one reported by the engine process over its pipe)."""
    return _BY_KIND.get(kind, VideosynthError)(detail)
