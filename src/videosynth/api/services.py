"""What every API dialect works with: settings, the store, the storage, the model catalog and the keys."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from videosynth import inputs, sizes
from videosynth.api.auth import Authenticator
from videosynth.api.storecalls import StoreCalls
from videosynth.catalog import Catalog, ModelSpec
from videosynth.ids import uuid4_text
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.tasks.models import ApiKey, GenerationParams, NewTask, Task
from videosynth.tasks.store import TaskStore

SEED_MAX = 2_147_483_647
UPLOAD_SECRET = "upload-policy"
_MAX_CACHED_LINKS = 10_000


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class TaskRequest:
    """A submit in the domain's terms, as a dialect parsed it."""

    model: ModelSpec
    prompt: str
    media_urls: tuple[str, ...]
    resolution: str
    ratio: str
    duration: int
    seed: int | None
    watermark: bool


class Services:
    def __init__(self, *, settings: Settings, store: TaskStore, storage: Storage, catalog: Catalog) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.catalog = catalog
        self.calls = StoreCalls(store)
        self.auth = Authenticator(self.calls)
        self._links: dict[tuple[str, int], str] = {}
        self.upload_secret = store.get_or_create_secret(UPLOAD_SECRET, lambda: secrets.token_urlsafe(32))

    async def create_task(self, key: ApiKey, request_id: str, req: TaskRequest) -> NewTask:
        """Store a new PENDING task; when this returns, the task is durable."""
        width, height = sizes.frame_size(req.resolution, req.ratio)
        task_id = uuid4_text()
        media_urls = req.media_urls
        if any(inputs.is_inline(url) for url in media_urls):
            # Decoding and storing megabytes must not hold up the event loop.
            media_urls = await run_in_threadpool(
                inputs.stash, self.storage, task_id, media_urls, self.settings.work_dir / "submits"
            )
        task = NewTask(
            task_id=task_id,
            account_id=key.account_id,
            api_key_id=key.key_id,
            request_id=request_id,
            model=req.model.name,
            engine=req.model.engine,
            prompt=req.prompt,
            media_urls=media_urls,
            params=GenerationParams(
                resolution=req.resolution,
                ratio=req.ratio,
                duration=req.duration,
                seed=req.seed if req.seed is not None else secrets.randbelow(SEED_MAX + 1),
                watermark=req.watermark,
                width=width,
                height=height,
            ),
            submit_time_ms=now_ms(),
        )
        try:
            await self.calls.create(task)
        except BaseException:
            await run_in_threadpool(inputs.discard, self.storage, inputs.keys_of(task_id, media_urls))
            raise
        return task

    def result_link(self, task: Task) -> str | None:
        if not task.result_key or task.end_time_ms is None:
            return None
        # Signed from the finish time, so every poll returns the same link and it lives as long as the task.
        expires = task.end_time_ms // 1000 + self.settings.url_ttl_seconds
        cached = self._links.get((task.result_key, expires))
        if cached is None:
            cached = self.storage.url_for(task.result_key, expires)
            if len(self._links) >= _MAX_CACHED_LINKS:
                self._links.clear()
            # The same key and expiry always sign to a link that works until that expiry: signing it once
            # per poll (HMAC, or SigV4 on S3) is the largest part of answering for a finished task.
            self._links[(task.result_key, expires)] = cached
        return cached
