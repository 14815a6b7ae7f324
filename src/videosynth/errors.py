"""The one exception hierarchy of videosynth.

Every error that can reach a client carries its DashScope wire ``code``; the HTTP status for
synchronous errors is chosen in one table, ``videosynth.api.errors.HTTP_STATUS``. Errors raised
while a task runs are recorded on the task (``output.code`` / ``output.message``), never as HTTP errors.

    VideosynthError
    ├── RequestError                 synchronous 4xx, no task is created
    │   ├── InvalidParameter         bad body, field or value
    │   ├── InvalidApiKey            missing / unknown / revoked key
    │   ├── AsyncRequired            submit without X-DashScope-Async: enable
    │   ├── ModelNotFound            unknown ``model``
    │   ├── InvalidUrl               unsupported media URL scheme (checked at submit)
    │   └── UnsupportedOperation     cancel of a task that is not PENDING
    ├── MediaError                   a reference image is unusable (task FAILED)
    │   ├── MediaDownloadFailed      InvalidURL / InvalidURL.ConnectionRefused / InvalidURL.Timeout
    │   ├── ForbiddenAddress         URL resolves to a private / loopback / reserved address
    │   ├── InvalidFileFormat        not JPEG / PNG / WEBP
    │   ├── InvalidFileSize          over the byte cap
    │   └── InvalidFileResolution    short side too small, or too many pixels
    ├── EngineError                  the engine failed (task FAILED, InternalError.Algo)
    │   └── EngineCrashed            the engine process died
    ├── TaskTimeout                  not finished in time (InternalError.Timeout)
    ├── Canceled                     cooperative stop of a running generation
    └── StoreError                   the task store is unavailable (503)
"""

from __future__ import annotations


class VideosynthError(Exception):
    """An internal error has occured, please try again later or contact service support."""

    code = "InternalError"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class RequestError(VideosynthError):
    """Required parameter missing or invalid, please check the request parameters."""

    code = "InvalidParameter"


class InvalidParameter(RequestError):
    """Required parameter missing or invalid, please check the request parameters."""


class InvalidApiKey(RequestError):
    """Invalid API-key provided."""

    code = "InvalidApiKey"


class AsyncRequired(RequestError):
    """current user api does not support synchronous calls."""

    code = "AccessDenied"


class ModelNotFound(RequestError):
    """Model not exist."""

    code = "InvalidParameter"


class InvalidUrl(RequestError):
    """InternalError.Algo.InvalidParameter: The provided URL does not appear to be valid. Ensure it is correctly formatted."""

    code = "InvalidParameter"


class UnsupportedOperation(RequestError):
    """Failed to cancel the task, please confirm if the task is in PENDING status."""

    code = "UnsupportedOperation"


class MediaError(VideosynthError):
    """The media format is not supported or incorrect for the data inspection."""

    code = "InvalidParameter"


class MediaDownloadFailed(MediaError):
    """Invalid URL provided in your request."""

    code = "InvalidURL"


class MediaConnectionRefused(MediaDownloadFailed):
    """Connection refused, please provide available URL."""

    code = "InvalidURL.ConnectionRefused"


class MediaTimeout(MediaDownloadFailed):
    """Download timeout, please check network connection."""

    code = "InvalidURL.Timeout"


class ForbiddenAddress(MediaDownloadFailed):
    """The media URL resolves to an address that is not publicly routable."""

    code = "InvalidURL"


class InvalidFileFormat(MediaError):
    """Invalid file format, the image must be JPEG, PNG or WEBP."""

    code = "InvalidFile.Format"


class InvalidFileSize(MediaError):
    """Invalid file size. The image file size must be less than 20MB."""

    code = "InvalidFile.Size"


class InvalidFileResolution(MediaError):
    """The image resolution is invalid."""

    code = "InvalidFile.Resolution"


class EngineError(VideosynthError):
    """An internal error has occured during algorithm execution."""

    code = "InternalError.Algo"


class EngineCrashed(EngineError):
    """The engine process exited unexpectedly; out of memory?"""


class TaskTimeout(VideosynthError):
    """An internal timeout error has occured during execution, please try again later or contact service support."""

    code = "InternalError.Timeout"


class Canceled(VideosynthError):
    """The task was canceled."""

    code = "Canceled"


class StoreError(VideosynthError):
    """The task store is temporarily unavailable, please try again later."""

    code = "ServiceUnavailable"
