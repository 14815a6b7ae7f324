"""The dashscope relay engine: :class:`~videosynth.engines.base.RelayEngine` over :class:`client.Upstream`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from videosynth.engines.base import RelayMedia, RelayRequest, UpstreamStatus
from videosynth.engines.dashscope.client import Upstream, data_url, submit_body
from videosynth.errors import (
    EngineError,
    MediaError,
    UpstreamResultUnusable,
    UpstreamSubmitLost,
)
from videosynth.media.fetch import FetchPolicy, fetch_to_file

MB = 1024 * 1024
POLL_GROWTH = 1.5


class DashScopeRelay:
    name = "dashscope"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str,
        request_timeout_s: float,
        poll_first_s: float,
        poll_max_s: float,
        give_up_after_s: float,
        download_timeout_s: float,
        max_video_mb: float,
        inline_max_mb: float,
        result_hosts: str,
        list_timezone: str,
        clock_skew_s: float,
        environ: Mapping[str, str],
    ) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise EngineError(f"engine 'dashscope': base_url must be an http(s) URL, got {base_url[:80]!r}")
        api_key = environ.get(api_key_env, "")
        if not api_key:
            raise EngineError(
                f"engine 'dashscope' needs its upstream key in the environment variable {api_key_env!r}"
                " (api_key_env), which is not set"
            )
        try:
            self._tz = ZoneInfo(list_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise EngineError(f"engine 'dashscope': unknown list_timezone {list_timezone!r}") from exc
        self._upstream = Upstream(base_url, api_key, request_timeout_s)
        self._model = model
        self.give_up_after_s = give_up_after_s
        self._poll_first_s = poll_first_s
        self._poll_max_s = max(poll_max_s, poll_first_s)
        self._inline_max_bytes = int(inline_max_mb * MB)
        self._result_hosts = {h.strip().lower() for h in result_hosts.split(",") if h.strip()}
        self._download = FetchPolicy(
            max_bytes=int(max_video_mb * MB),
            read_timeout=max(request_timeout_s, 10.0),
            total_timeout=download_timeout_s,
        )
        self._skew_ms = int(clock_skew_s * 1000)

    def upstream_model(self, request: RelayRequest) -> str:
        return self._model or request.model

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        self._upstream.close()

    def _url_of(self, media: RelayMedia, model: str) -> str:
        if media.url is not None:
            return media.url  # the upstream fetches it itself
        assert media.data is not None
        if len(media.data) <= self._inline_max_bytes:
            return data_url(media)
        return self._upstream.upload(model, media)

    def submit(self, request: RelayRequest) -> str:
        model = self.upstream_model(request)
        urls = [self._url_of(m, model) for m in request.media]
        body = submit_body(request, model, urls)
        return self._upstream.submit(body, resolve_uploads=any(u.startswith("oss://") for u in urls))

    def find_submitted(self, request: RelayRequest, since_ms: int, until_ms: int) -> str | None:
        # DashScope takes no idempotency key and echoes nothing of ours, so the only trace of a lost submit
        # is a task of this model created meanwhile. None at all: nothing was created. One or more: any
        # could be another client's, and taking the wrong one would hand this client someone else's video.
        created = self._upstream.tasks_created(
            self.upstream_model(request), since_ms - self._skew_ms, until_ms + self._skew_ms, self._tz
        )
        if not created:
            return None
        raise UpstreamSubmitLost(
            f"the answer to the upstream submit was lost and the upstream created {len(created)} task(s) of"
            " this model meanwhile; it was not submitted again, to avoid a duplicate"
        )

    def status(self, reference: str) -> UpstreamStatus:
        return self._upstream.task(reference)

    def cancel(self, reference: str) -> bool:
        return self._upstream.cancel(reference)

    def download(self, status: UpstreamStatus, destination: Path, should_stop: Callable[[], bool]) -> None:
        url = status.result_url or ""
        host = (urlsplit(url).hostname or "").lower()
        policy = self._download
        if host in self._result_hosts:
            policy = FetchPolicy(
                allow_private=True,
                max_bytes=policy.max_bytes,
                read_timeout=policy.read_timeout,
                total_timeout=policy.total_timeout,
            )
        try:
            fetch_to_file(url, policy, destination, should_stop, accept="video/mp4,*/*;q=0.8")
        except MediaError as exc:
            raise UpstreamResultUnusable(
                f"the upstream's video could not be downloaded: {exc.detail or exc}"
            ) from exc
        with destination.open("rb") as f:
            head = f.read(12)
        if head[4:8] != b"ftyp":
            destination.unlink(missing_ok=True)
            raise UpstreamResultUnusable("the upstream's result is not an MP4")

    def poll_delay(self, polls: int) -> float:
        return float(min(self._poll_max_s, self._poll_first_s * POLL_GROWTH**polls))
