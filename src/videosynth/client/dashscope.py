"""A small synchronous client for DashScope's public asynchronous video-synthesis wire.

Submit, query, cancel, list, the temporary-upload flow (getPolicy, then a multipart POST to the policy's
``upload_host``, giving ``oss://<key>``) and the result download; and this server's push extensions: the
account's webhooks and signing secret, a task's deliveries, and a task's own callback URL on submit.

Every refusal or failure to answer is a :class:`ClientError` carrying the HTTP status (``None`` when no answer
came), the wire's ``code`` and ``message`` and the ``request_id``. Requests that are safe to repeat are
retried a couple of times on connection errors, 429 (after its Retry-After) and 5xx; a submit is safe to
repeat because it carries an ``Idempotency-Key``, which this server honours (the hosted service ignores it).
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from videosynth import __version__

DEFAULT_BASE_URL = "http://127.0.0.1:8000/api/v1"
API_PATH = "/api/v1"
SUBMIT_PATH = "/services/aigc/video-generation/video-synthesis"
OSS_RESOLVE_HEADER = "X-DashScope-OssResourceResolve"
# This server's extension: a URL told of this task's status changes, besides the account's webhooks.
CALLBACK_HEADER = "X-Videosynth-Callback-Url"
USER_AGENT = f"videosynth-cli/{__version__}"
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"})

# Tries of a request that is safe to repeat, and the waits between them (a Retry-After wins, up to the cap).
ATTEMPTS = 3
BACKOFF_S = (0.5, 1.5)
MAX_RETRY_AFTER_S = 30.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses after which the request was surely not acted upon: a cancel is repeated only after these.
NOT_ACTED_STATUSES = frozenset({429, 503})


class ClientError(Exception):
    """The server refused a request (``status`` 4xx), failed it (5xx), or could not be reached (``None``)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    @property
    def refused(self) -> bool:
        """A 4xx: the server understood and said no; repeating the same request will not help."""
        return self.status is not None and 400 <= self.status < 500

    def describe(self) -> str:
        """``HTTP 400 InvalidParameter: <message> (request_id <id>)``, or the network failure."""
        if self.status is None:
            return self.message
        text = f"HTTP {self.status}" + (f" {self.code}" if self.code else "") + f": {self.message}"
        return text + (f" (request_id {self.request_id})" if self.request_id else "")


def normalise_base_url(url: str) -> str:
    """The API base as the SDK takes it (``http://host:port/api/v1``), from a URL with or without the path.

    A URL with no path gets ``/api/v1``; one with a path (a gateway's prefix, say) is kept as given; a bare
    ``host:port`` is taken as ``http://host:port``. Trailing slashes go."""
    text = url.strip()
    if not text:
        raise ValueError("the base URL is empty")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) base URL: {url!r}")
    path = parts.path.rstrip("/")
    if not path:
        path = API_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def error_of(response: httpx.Response) -> ClientError:
    """The error a non-200 answer means, in the wire's own fields."""
    body = _body(response) or {}
    code = body.get("code")
    message = body.get("message") or body.get("msg") or (response.text[:200] if not body else "")
    request_id = body.get("request_id") or response.headers.get("x-request-id")
    return ClientError(
        str(message or response.reason_phrase or "no message"),
        status=response.status_code,
        code=str(code) if code else None,
        request_id=str(request_id) if request_id else None,
        retry_after_s=retry_after_s(response),
    )


def is_url(reference: str) -> bool:
    """A reference sent as it is (``http(s)``, ``data:``, ``oss://``), not a local file to upload."""
    lowered = reference[:8].lower()
    return lowered.startswith(("http://", "https://", "data:", "oss://"))


def local_path(reference: str) -> Path:
    """The file a local reference names (a path, or a ``file://`` URL)."""
    if reference.lower().startswith("file://"):
        from urllib.request import url2pathname

        return Path(url2pathname(urlsplit(reference).path))
    return Path(reference).expanduser()


@dataclass(frozen=True)
class SubmitRequest:
    """A reference-to-video request as the wire has it: ``input`` and ``parameters`` (absent ones omitted,
    so the server's model defaults apply)."""

    model: str
    prompt: str
    media_urls: tuple[str, ...]
    resolution: str | None = None
    ratio: str | None = None
    duration: int | None = None
    seed: int | None = None
    watermark: bool | None = None

    def body(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            name: value
            for name, value in (
                ("resolution", self.resolution),
                ("ratio", self.ratio),
                ("duration", self.duration),
                ("watermark", self.watermark),
                ("seed", self.seed),
            )
            if value is not None
        }
        body: dict[str, Any] = {
            "model": self.model,
            "input": {
                "prompt": self.prompt,
                "media": [{"type": "reference_image", "url": url} for url in self.media_urls],
            },
        }
        if parameters:
            body["parameters"] = parameters
        return body


Sleep = Callable[[float], None]


class DashScope:
    """One base URL and API key. Not thread-safe; close it (or use it as a context manager)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 60.0,
        transfer_timeout_s: float = 600.0,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.base_url = normalise_base_url(base_url)
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._sleep = sleep
        self._transfer_timeout = httpx.Timeout(transfer_timeout_s, connect=min(10.0, transfer_timeout_s))
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )

    def __enter__(self) -> DashScope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # --- sending ----------------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        retry_on: frozenset[int] = RETRY_STATUSES,
        retry_lost: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """The 200 answer; a ClientError otherwise. Repeats the request on the statuses in ``retry_on``, on
        connection failures, and (when ``retry_lost``) on answers lost after the request went out."""
        last: ClientError | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                wait = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
                if last is not None and last.retry_after_s is not None:
                    wait = min(max(wait, last.retry_after_s), MAX_RETRY_AFTER_S)
                self._sleep(wait)
            try:
                response = self._client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = ClientError(f"could not reach {_origin(url)} for the {what}: {_why(exc)}")
                continue
            except httpx.HTTPError as exc:
                last = ClientError(f"the {what}'s answer from {_origin(url)} was lost: {_why(exc)}")
                if retry_lost:
                    continue
                raise last from exc
            if response.status_code == 200:
                return response
            last = error_of(response)
            if response.status_code not in retry_on:
                raise last
        assert last is not None
        raise last

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        body = _body(response)
        if body is None:
            raise ClientError(
                f"the {what}'s answer is not a JSON object",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            )
        return body

    # --- the wire ---------------------------------------------------------------------------------------

    def submit(
        self, request: SubmitRequest, *, resolve_uploads: bool = False, callback_url: str | None = None
    ) -> dict[str, Any]:
        """``POST .../video-synthesis``: the answer body (``output.task_id``, ``output.task_status``).
        ``callback_url`` (this server's extension) is told of the task's status changes."""
        headers = {
            **self._auth,
            "X-DashScope-Async": "enable",
            # Our server answers a repeat of this submit with the task the first try created.
            "Idempotency-Key": str(uuid.uuid4()),
        }
        if resolve_uploads or any(url.startswith("oss://") for url in request.media_urls):
            headers[OSS_RESOLVE_HEADER] = "enable"
        if callback_url is not None:
            headers[CALLBACK_HEADER] = callback_url
        response = self._send(
            "POST", self.base_url + SUBMIT_PATH, what="submit", json=request.body(), headers=headers
        )
        body = self._json(response, "submit")
        output = body.get("output")
        if not isinstance(output, dict) or not isinstance(output.get("task_id"), str):
            raise ClientError(
                "the submit's answer has no task id", status=200, request_id=body.get("request_id")
            )
        return body

    def query(self, task_id: str) -> dict[str, Any]:
        """``GET /tasks/{id}``: the answer body (``output`` with ``task_status``; UNKNOWN for no such task)."""
        response = self._send("GET", self._task_url(task_id), what="query", headers=self._auth)
        body = self._json(response, "query")
        output = body.get("output")
        if not isinstance(output, dict) or not isinstance(output.get("task_status"), str):
            raise ClientError(
                "the query's answer has no task status", status=200, request_id=body.get("request_id")
            )
        return body

    def cancel(self, task_id: str) -> dict[str, Any]:
        """``POST /tasks/{id}/cancel``: the answer body; a task past PENDING is refused (400 on the hosted
        service; this server also cancels RUNNING tasks)."""
        response = self._send(
            "POST",
            self._task_url(task_id) + "/cancel",
            what="cancel",
            retry_on=NOT_ACTED_STATUSES,
            retry_lost=False,
            headers=self._auth,
        )
        return self._json(response, "cancel")

    def list_tasks(self, **filters: str | int | None) -> dict[str, Any]:
        """``GET /tasks`` with the wire's filters (``status``, ``model_name``, ``page_no``, ``page_size``,
        ``start_time``, ``end_time``, ``task_id``); the flat page body (``total``, ``data``...)."""
        params = {name: str(value) for name, value in filters.items() if value is not None}
        response = self._send(
            "GET", self.base_url + "/tasks", what="task list", params=params, headers=self._auth
        )
        return self._json(response, "task list")

    def upload(self, path: Path, model: str) -> str:
        """A local file through the temporary-upload flow; its ``oss://`` URL (submit it with the resolve
        header). A form POST that failed is tried again under a new policy (a new upload_dir), so a repeat
        never collides with a first try that arrived after all."""
        data = path.read_bytes()
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        last: ClientError | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
            key, fields, host = self._policy(path.name, mime, model)  # retried by itself
            try:
                # The upload host takes no Bearer key (the signed policy is the credential) and may be
                # another host.
                self._send(
                    "POST",
                    host,
                    what="upload",
                    retry_on=frozenset(),
                    retry_lost=False,
                    data=fields,
                    files={"file": (path.name, data, mime)},
                    timeout=self._transfer_timeout,
                )
            except ClientError as exc:
                if exc.refused and exc.status != 429:
                    raise
                last = exc
                continue
            return f"oss://{key}"
        assert last is not None
        raise last

    def _policy(self, name: str, mime: str, model: str) -> tuple[str, dict[str, str], str]:
        """A fresh upload policy: the object key for ``name``, the form's fields, the upload host."""
        response = self._send(
            "GET",
            self.base_url + "/uploads",
            what="upload policy",
            params={"action": "getPolicy", "model": model},
            headers=self._auth,
        )
        policy = self._json(response, "upload policy").get("data")
        if not isinstance(policy, Mapping):
            raise ClientError("the upload policy's answer has no data", status=200)
        try:
            key = f"{policy['upload_dir']}/{name}"
            fields = {
                "OSSAccessKeyId": str(policy["oss_access_key_id"]),
                "Signature": str(policy["signature"]),
                "policy": str(policy["policy"]),
                "key": key,
                "x-oss-object-acl": str(policy["x_oss_object_acl"]),
                "x-oss-forbid-overwrite": str(policy["x_oss_forbid_overwrite"]),
                "success_action_status": "200",
                "x-oss-content-type": mime,
            }
            return key, fields, str(policy["upload_host"])
        except KeyError as exc:
            raise ClientError(f"the upload policy lacks {exc}", status=200) from None

    def download(self, url: str, target: Path) -> int:
        """The result at ``url`` (a signed link: sent without the API key) written to ``target`` through a
        temporary file beside it; the bytes written."""
        target = target.expanduser()
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        last: ClientError | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
            try:
                with self._client.stream(
                    "GET", url, headers={"Accept": "*/*"}, timeout=self._transfer_timeout
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        last = error_of(response)
                        if response.status_code in RETRY_STATUSES:
                            continue
                        raise last
                    size = 0
                    with partial.open("wb") as out:
                        for chunk in response.iter_bytes(1024 * 1024):
                            out.write(chunk)
                            size += len(chunk)
                os.replace(partial, target)
                return size
            except httpx.HTTPError as exc:
                last = ClientError(f"the download from {_origin(url)} failed: {_why(exc)}")
            finally:
                partial.unlink(missing_ok=True)
        assert last is not None
        raise last

    # --- webhooks and deliveries (this server's extensions) -------------------------------------------

    def add_webhook(
        self,
        url: str,
        *,
        events: Sequence[str] | None = None,
        fmt: str | None = None,
        include_result: bool | None = None,
    ) -> dict[str, Any]:
        """``POST /webhooks``: the answer body (``output`` is the webhook: ``webhook_id``, ``url``, ``events``,
        ``format``, ``include_result``, ``created_at``). ``fmt`` is the body's ``format``; absent arguments take
        the server's defaults (every event the format sends, ``standard``, the result included)."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        if fmt is not None:
            body["format"] = fmt
        if include_result is not None:
            body["include_result"] = include_result
        # A repeat after a lost answer would add a second webhook.
        response = self._send(
            "POST",
            self.base_url + "/webhooks",
            what="webhook add",
            retry_on=NOT_ACTED_STATUSES,
            retry_lost=False,
            json=body,
            headers=self._auth,
        )
        return self._output(response, "webhook add", "webhook_id")

    def list_webhooks(self) -> dict[str, Any]:
        """``GET /webhooks``: the answer body (``output.webhooks``, a list of webhooks)."""
        response = self._send("GET", self.base_url + "/webhooks", what="webhook list", headers=self._auth)
        body = self._output(response, "webhook list")
        if not isinstance(body["output"].get("webhooks"), list):
            raise ClientError(
                "the webhook list's answer has no webhooks", status=200, request_id=body.get("request_id")
            )
        return body

    def remove_webhook(self, webhook_id: str) -> dict[str, Any]:
        """``DELETE /webhooks/{id}``: the answer body; an unknown id is refused (404 NotFound)."""
        # A repeat after a lost answer would be refused as unknown: not repeated then.
        response = self._send(
            "DELETE",
            f"{self.base_url}/webhooks/{quote(webhook_id, safe='')}",
            what="webhook removal",
            retry_on=NOT_ACTED_STATUSES,
            retry_lost=False,
            headers=self._auth,
        )
        return self._output(response, "webhook removal")

    def webhook_secret(self) -> dict[str, Any]:
        """``GET /webhooks/secret``: the answer body (``output.secret``, and while the previous one still
        signs, ``previous_secret`` and ``previous_secret_expires_at``)."""
        response = self._send(
            "GET", self.base_url + "/webhooks/secret", what="webhook secret", headers=self._auth
        )
        return self._output(response, "webhook secret", "secret")

    def rotate_webhook_secret(self, overlap_s: float | None = None) -> dict[str, Any]:
        """``POST /webhooks/secret/rotate``: a new secret; the old one goes on signing for ``overlap_s``
        seconds (the server's default when None). The answer body, as :meth:`webhook_secret`'s."""
        body: dict[str, Any] = {}
        if overlap_s is not None:
            body["overlap_seconds"] = int(overlap_s) if float(overlap_s).is_integer() else overlap_s
        # A repeat after a lost answer would rotate twice, ending the overlap of the secret in use.
        response = self._send(
            "POST",
            self.base_url + "/webhooks/secret/rotate",
            what="secret rotation",
            retry_on=NOT_ACTED_STATUSES,
            retry_lost=False,
            json=body,
            headers=self._auth,
        )
        return self._output(response, "secret rotation", "secret")

    def deliveries(self, task_id: str) -> dict[str, Any]:
        """``GET /tasks/{id}/deliveries``: the answer body (``output.deliveries``, each with its
        ``attempt_log``); an unknown task is refused (404 NotFound)."""
        response = self._send(
            "GET", self._task_url(task_id) + "/deliveries", what="delivery list", headers=self._auth
        )
        body = self._output(response, "delivery list")
        if not isinstance(body["output"].get("deliveries"), list):
            raise ClientError(
                "the delivery list's answer has no deliveries", status=200, request_id=body.get("request_id")
            )
        return body

    def redeliver(self, task_id: str, delivery_id: str) -> dict[str, Any]:
        """``POST /tasks/{id}/deliveries/{delivery_id}/redeliver``: the delivery queued again (a repeat just
        queues it again); the answer body (``output`` is the delivery)."""
        response = self._send(
            "POST",
            f"{self._task_url(task_id)}/deliveries/{quote(delivery_id, safe='')}/redeliver",
            what="redelivery",
            headers=self._auth,
        )
        return self._output(response, "redelivery", "delivery_id")

    def _output(self, response: httpx.Response, what: str, field: str | None = None) -> dict[str, Any]:
        """The answer body, which must have an ``output`` object (with a string ``field``, if given)."""
        body = self._json(response, what)
        output = body.get("output")
        if not isinstance(output, dict) or (field is not None and not isinstance(output.get(field), str)):
            raise ClientError(
                f"the {what}'s answer has no " + (field or "output"),
                status=200,
                request_id=body.get("request_id"),
            )
        return body

    def _task_url(self, task_id: str) -> str:
        return f"{self.base_url}/tasks/{quote(task_id, safe='')}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _why(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
