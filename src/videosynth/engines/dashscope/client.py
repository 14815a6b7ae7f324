"""The upstream's wire: DashScope's asynchronous video-synthesis API as a client speaks it.

Pure functions over bodies and answers, plus :class:`Upstream`, which sends them. Every HTTP outcome is
turned into the domain's words here: a status, or one of the Upstream* errors of ``videosynth.errors``.
"""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from videosynth.engines.base import RelayMedia, RelayRequest, UpstreamPhase, UpstreamStatus
from videosynth.errors import (
    SubmitAnswerLost,
    UpstreamRefused,
    UpstreamThrottled,
    UpstreamUnavailable,
)

SUBMIT_PATH = "/services/aigc/video-generation/video-synthesis"
OSS_RESOLVE_HEADER = "X-DashScope-OssResourceResolve"
USER_AGENT = "videosynth-relay"

PHASES = {
    "PENDING": UpstreamPhase.QUEUED,
    "SUSPENDED": UpstreamPhase.QUEUED,
    "RUNNING": UpstreamPhase.RUNNING,
    "SUCCEEDED": UpstreamPhase.SUCCEEDED,
    "FAILED": UpstreamPhase.FAILED,
    "CANCELED": UpstreamPhase.CANCELED,
    "UNKNOWN": UpstreamPhase.UNKNOWN,
}
# A gateway in front of the upstream answers these when it gave up waiting: the upstream may have acted.
_AMBIGUOUS_STATUSES = frozenset({502, 504})


def data_url(media: RelayMedia) -> str:
    assert media.data is not None
    return f"data:{media.mime};base64,{base64.b64encode(media.data).decode('ascii')}"


def submit_body(request: RelayRequest, upstream_model: str, urls: Iterable[str]) -> dict[str, Any]:
    """The upstream's submit body: the client's request with the model name mapped."""
    return {
        "model": upstream_model,
        "input": {
            "prompt": request.prompt,
            "media": [{"type": "reference_image", "url": url} for url in urls],
        },
        "parameters": {
            "resolution": request.resolution,
            "ratio": request.ratio,
            "duration": request.duration,
            "watermark": request.watermark,
            "seed": request.seed,
        },
    }


def parse_status(body: Mapping[str, Any]) -> UpstreamStatus:
    """A task answer (``GET /tasks/{id}``) in the domain's words."""
    output = body.get("output")
    if not isinstance(output, Mapping):
        raise UpstreamUnavailable("the upstream's task answer has no output")
    phase = PHASES.get(str(output.get("task_status", "")).upper(), UpstreamPhase.UNKNOWN)
    progress = output.get("progress")
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}
    assert isinstance(usage, Mapping)
    seconds = usage.get("output_video_duration", usage.get("duration"))
    video_url = output.get("video_url")
    if phase is UpstreamPhase.SUCCEEDED and not isinstance(video_url, str):
        raise UpstreamUnavailable("the upstream's SUCCEEDED answer has no video link")
    return UpstreamStatus(
        phase=phase,
        progress=progress if isinstance(progress, int) and not isinstance(progress, bool) else None,
        result_url=video_url if isinstance(video_url, str) else None,
        video_seconds=float(seconds)
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        else None,
        code=str(output["code"]) if output.get("code") else None,
        message=str(output["message"]) if output.get("message") else None,
    )


def list_time(epoch_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz).strftime("%Y%m%d%H%M%S")


def retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _error_fields(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if not isinstance(body, Mapping):
        return None, ""
    code = body.get("code")
    return (str(code) if code else None), str(body.get("message") or "")[:500]


def raise_for_answer(response: httpx.Response, what: str) -> None:
    """Nothing for a 200; else the domain error the answer means."""
    status = response.status_code
    if status == 200:
        return
    code, message = _error_fields(response)
    said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if status == 429:
        raise UpstreamThrottled(
            f"the upstream throttled the {what} ({said})", retry_after_s=retry_after_s(response)
        )
    if status in (401, 403):
        # Our credentials, not the client's: never shown to the client as its own InvalidApiKey.
        raise UpstreamRefused(f"the upstream refused the relay's credentials for the {what} ({said})")
    if status >= 500 or status == 408:
        raise UpstreamUnavailable(f"the upstream failed the {what} ({said})")
    raise UpstreamRefused(message or f"the upstream refused the {what} ({said})", upstream_code=code)


class Upstream:
    """One upstream endpoint and key; thread-safe (one connection pool shared by the worker's threads)."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, max_connections: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,  # the configured upstream, not whatever a proxy variable says
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, what: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._client.get(self.base_url + path, params=params, headers=self._auth)
        except httpx.HTTPError as exc:
            raise _unreachable(what, exc) from exc
        raise_for_answer(response, what)
        return _json(response, what)

    def submit(self, body: Mapping[str, Any], resolve_uploads: bool) -> str:
        headers = {**self._auth, "X-DashScope-Async": "enable", "Content-Type": "application/json"}
        if resolve_uploads:
            headers[OSS_RESOLVE_HEADER] = "enable"
        try:
            response = self._client.post(self.base_url + SUBMIT_PATH, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent: submitting again is safe.
            raise _unreachable("submit", exc) from exc
        except httpx.HTTPError as exc:
            raise SubmitAnswerLost(f"the submit's answer was lost: {type(exc).__name__}") from exc
        if response.status_code in _AMBIGUOUS_STATUSES:
            raise SubmitAnswerLost(f"the submit's answer was lost: HTTP {response.status_code}")
        raise_for_answer(response, "submit")
        output = _json(response, "submit").get("output")
        task_id = output.get("task_id") if isinstance(output, Mapping) else None
        if not isinstance(task_id, str) or not task_id:
            raise SubmitAnswerLost("the upstream's submit answer has no task id")
        return task_id

    def task(self, task_id: str) -> UpstreamStatus:
        return parse_status(self._get(f"/tasks/{task_id}", "status poll"))

    def cancel(self, task_id: str) -> bool:
        try:
            response = self._client.post(f"{self.base_url}/tasks/{task_id}/cancel", headers=self._auth)
        except httpx.HTTPError as exc:
            raise _unreachable("cancel", exc) from exc
        if response.status_code == 400:
            return False  # UnsupportedOperation: it is running (or finished) upstream
        raise_for_answer(response, "cancel")
        return True

    def tasks_created(self, model: str, since_ms: int, until_ms: int, tz: ZoneInfo) -> list[tuple[str, int]]:
        """``(task id, creation time)`` of the upstream's tasks of ``model`` created in the window (the list
        API's whole-second filter, then the creation times themselves)."""
        found: list[tuple[str, int]] = []
        page = 1
        while True:
            body = self._get(
                "/tasks",
                "task list",
                {
                    "model_name": model,
                    "start_time": list_time(since_ms - 1000, tz),
                    "end_time": list_time(until_ms + 1000, tz),
                    "page_no": page,
                    "page_size": 100,
                },
            )
            data = body.get("data") if isinstance(body.get("data"), list) else []
            assert isinstance(data, list)
            for item in data:
                if isinstance(item, Mapping) and isinstance(item.get("task_id"), str):
                    created = item.get("gmt_create")
                    if isinstance(created, int) and not since_ms <= created <= until_ms:
                        continue
                    found.append((item["task_id"], created if isinstance(created, int) else 0))
            total = body.get("total")
            if not data or not isinstance(total, int) or page * 100 >= total:
                return found
            page += 1

    def upload(self, model: str, media: RelayMedia) -> str:
        """The upstream's own temporary-file flow, as the dashscope SDK does it: a policy, a form POST to
        its upload host, then ``oss://{key}`` (the submit must carry the resolve header)."""
        policy = self._get("/uploads", "upload policy", {"action": "getPolicy", "model": model}).get("data")
        if not isinstance(policy, Mapping):
            raise UpstreamUnavailable("the upstream's upload policy answer has no data")
        try:
            key = f"{policy['upload_dir']}/{media.filename}"
            fields = {
                "OSSAccessKeyId": str(policy["oss_access_key_id"]),
                "Signature": str(policy["signature"]),
                "policy": str(policy["policy"]),
                "key": key,
                "x-oss-object-acl": str(policy["x_oss_object_acl"]),
                "x-oss-forbid-overwrite": str(policy["x_oss_forbid_overwrite"]),
                "success_action_status": "200",
                "x-oss-content-type": media.mime,
            }
            host = str(policy["upload_host"])
        except KeyError as exc:
            raise UpstreamUnavailable(f"the upstream's upload policy lacks {exc}") from exc
        assert media.data is not None
        try:
            response = self._client.post(
                host, data=fields, files={"file": (media.filename, media.data, media.mime)}
            )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"the upstream's upload host could not be reached: {type(exc).__name__}"
            ) from exc
        raise_for_answer(response, "upload")
        return f"oss://{key}"


def _unreachable(what: str, exc: Exception) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"the upstream could not be reached for the {what}: {type(exc).__name__}")


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamUnavailable(f"the upstream's {what} answer is not JSON") from exc
    if not isinstance(body, dict):
        raise UpstreamUnavailable(f"the upstream's {what} answer is not a JSON object")
    return body
