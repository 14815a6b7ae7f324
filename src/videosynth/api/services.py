"""What every API dialect works with: settings, the store, the storage, the model catalog and the keys."""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from videosynth import inputs, sizes
from videosynth.api.auth import Authenticator
from videosynth.api.hooks import Hooks
from videosynth.api.limits import EffectiveLimits, RateLimiter
from videosynth.api.storecalls import StoreCalls
from videosynth.catalog import Catalog, ModelSpec
from videosynth.errors import IdempotencyConflict, StorageQuotaExceeded
from videosynth.ids import uuid4_text
from videosynth.media.thumbnail import first_frame_jpeg, thumbnail_key
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.storage.local import LocalStorage
from videosynth.tasks.models import ApiKey, GenerationParams, NewTask, StoredInput, Task
from videosynth.tasks.store import TaskStore

log = logging.getLogger(__name__)

SEED_MAX = 2_147_483_647
UPLOAD_SECRET = "upload-policy"
_MAX_CACHED_LINKS = 10_000
#: How long an undelivered answer waits for its client's retry: SDK v2 retries twice, within its timeout
#: and a backoff of seconds.
UNDELIVERED_TTL_MS = 15 * 60 * 1000
#: What a client over its stored-bytes quota is told to wait: earlier tasks take minutes to finish.
STORED_FULL_RETRY_S = 60
#: The largest result read back whole (a thumbnail made from an object store's copy).
MAX_RESULT_READ_BYTES = 2 * 1024 * 1024 * 1024


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
    #: Where this task's events go besides the account's webhooks (checked with ``hooks.check_endpoint_url``).
    callback_url: str | None = None


@dataclass(frozen=True)
class SubmitIdentity:
    """What makes a submit recognisable when it comes again: the client's Idempotency-Key, or else the
    session of a client that retries by itself; and the fingerprint of the request (same body, same
    fingerprint)."""

    fingerprint: str
    idempotency_key: str | None = None
    session: str | None = None


@dataclass(frozen=True)
class Submitted:
    task_id: str
    #: The task was created by an earlier try of this submit.
    replayed: bool


@dataclass
class _InFlight:
    task_id: asyncio.Future[str]
    client_gone: Callable[[], Awaitable[bool]]


async def _never_gone() -> bool:
    return False


class Services:
    def __init__(self, *, settings: Settings, store: TaskStore, storage: Storage, catalog: Catalog) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.catalog = catalog
        self.calls = StoreCalls(store)
        self.auth = Authenticator(self.calls)
        self._links: dict[tuple[str, int], str] = {}
        self.rates = RateLimiter(self.calls)
        self._limits: dict[int, tuple[ApiKey, EffectiveLimits]] = {}
        self._in_flight: dict[tuple[str, str], _InFlight] = {}
        self.hooks = Hooks(settings, store)
        #: Set when the server stops: long-lived responses (event streams) end so the server can.
        self.stopping = threading.Event()
        self.upload_secret = store.get_or_create_secret(UPLOAD_SECRET, lambda: secrets.token_urlsafe(32))

    def limits(self, key: ApiKey) -> EffectiveLimits:
        # Per key object: the authenticator hands out the same object for a second, and merging the limits
        # again would cost every poll about 5 us.
        cached = self._limits.get(id(key))
        if cached is not None and cached[0] is key:
            return cached[1]
        limits = EffectiveLimits.of(key, self.settings)
        if len(self._limits) >= _MAX_CACHED_LINKS:
            self._limits.clear()
        self._limits[id(key)] = (key, limits)
        return limits

    def default_limits(self) -> EffectiveLimits:
        """The limits of an account and key that set none of their own."""
        return EffectiveLimits.of(ApiKey("", "", "", "", 0), self.settings)

    async def admit_query(self, key: ApiKey) -> None:
        """Count a task query against the key's query rate, or raise ``RateLimited``."""
        limits = self.limits(key)
        await self.rates.admit(limits.scope(key, "query_rps"), limits.query_rps)

    async def submit(
        self,
        key: ApiKey,
        request_id: str,
        req: TaskRequest,
        again: SubmitIdentity | None = None,
        client_gone: Callable[[], Awaitable[bool]] = _never_gone,
    ) -> Submitted:
        """Store a new PENDING task, or find the one an earlier try of the same submit created.

        When this returns the task is durable. A repeated submit (``again``) is answered with the task of the
        first try without counting against any limit: once a task exists, its submit is never refused."""
        if again is not None and again.idempotency_key is not None:
            return await self._submit_with_key(key, request_id, req, again, again.idempotency_key)
        if again is not None and again.session is not None:
            return await self._submit_retryable(key, request_id, req, again, again.session, client_gone)
        return Submitted(await self._create(key, request_id, req), replayed=False)

    async def _submit_with_key(
        self, key: ApiKey, request_id: str, req: TaskRequest, again: SubmitIdentity, idem_key: str
    ) -> Submitted:
        name = "key:" + idem_key
        found = await self.calls.read(self.store.find_idempotent, key.account_id, name, now_ms())
        if found is not None:
            if found[0] != again.fingerprint:
                raise IdempotencyConflict()
            return Submitted(found[1], replayed=True)
        limits = self.limits(key)
        await self.rates.admit(limits.scope(key, "submit_rps"), limits.submit_rps)
        await self._check_stored(key, limits, req.media_urls)
        task = await self._new_task(key, request_id, req)
        try:
            # Still atomic: two tries racing past the lookup above create one task between them.
            task_id, created = await self.calls.write(
                self.store.create_idempotent, task, name, again.fingerprint, now_ms(), limits.queue_cap()
            )
        except BaseException:
            await self._discard_inputs(task)
            raise
        if not created:
            await self._discard_inputs(task)
        else:
            await self._record_stored(key, task, req.media_urls)
        return Submitted(task_id, replayed=not created)

    async def _submit_retryable(
        self,
        key: ApiKey,
        request_id: str,
        req: TaskRequest,
        again: SubmitIdentity,
        session: str,
        client_gone: Callable[[], Awaitable[bool]],
    ) -> Submitted:
        # A client that retries on its own (SDK v2 retries a submit on a timeout, with the same body and
        # session id) without an Idempotency-Key. Its retry is told apart from a deliberate second submit
        # of the same body by whether the first try's client was still there to take the answer: only an
        # answer that could not be delivered is handed to a later identical submit.
        name = f"retry:{session}:{again.fingerprint}"
        slot = (key.account_id, name)
        first = self._in_flight.get(slot)
        if first is not None and await first.client_gone():
            await asyncio.wait({first.task_id})
            if not first.task_id.cancelled() and first.task_id.exception() is None:
                return await self._replayed(key, name, first.task_id.result(), client_gone)
            # The first try failed before creating a task: this one tries afresh.
        found = await self.calls.read(
            self.store.find_idempotent, key.account_id, name, now_ms(), UNDELIVERED_TTL_MS
        )
        if found is not None:
            return await self._replayed(key, name, found[1], client_gone)
        attempt = _InFlight(asyncio.get_running_loop().create_future(), client_gone)
        self._in_flight[slot] = attempt
        try:
            task_id = await self._create(key, request_id, req)
            if await client_gone():
                # Kept before the tries waiting in this process are woken, so they can drop it again.
                await self._keep_undelivered(key, name, again.fingerprint, task_id)
            attempt.task_id.set_result(task_id)
        except Exception as exc:
            attempt.task_id.set_exception(exc)
            attempt.task_id.exception()  # retrieved: nobody may be waiting for it
            raise
        except BaseException:
            attempt.task_id.cancel()
            raise
        finally:
            if self._in_flight.get(slot) is attempt:
                del self._in_flight[slot]
        return Submitted(task_id, replayed=False)

    async def _keep_undelivered(self, key: ApiKey, name: str, fingerprint: str, task_id: str) -> None:
        try:
            await self.calls.write(
                self.store.remember_idempotent, key.account_id, name, fingerprint, task_id, now_ms()
            )
        except Exception:
            log.warning("could not keep an undelivered submit answer for a retry", exc_info=True)

    async def _replayed(
        self, key: ApiKey, name: str, task_id: str, client_gone: Callable[[], Awaitable[bool]]
    ) -> Submitted:
        if not await client_gone():
            # Delivered this time: a later identical submit is a new one again.
            try:
                await self.calls.write(self.store.forget_idempotent, key.account_id, name)
            except Exception:
                log.warning("could not drop a delivered submit answer", exc_info=True)
        return Submitted(task_id, replayed=True)

    async def _create(self, key: ApiKey, request_id: str, req: TaskRequest) -> str:
        limits = self.limits(key)
        await self.rates.admit(limits.scope(key, "submit_rps"), limits.submit_rps)
        await self._check_stored(key, limits, req.media_urls)
        task = await self._new_task(key, request_id, req)
        try:
            await self.calls.create(task, limits.queue_cap())
        except BaseException:
            await self._discard_inputs(task)
            raise
        await self._record_stored(key, task, req.media_urls)
        return task.task_id

    async def check_upload_room(self, key: ApiKey) -> None:
        """Refuse a new upload policy to an account whose kept uploads and references fill its quota."""
        await self._check_stored(key, self.limits(key), ())

    async def _check_stored(self, key: ApiKey, limits: EffectiveLimits, media_urls: tuple[str, ...]) -> None:
        if limits.max_stored_mb <= 0:
            return
        adding = sum(inputs.inline_size(url) for url in media_urls if inputs.is_inline(url))
        if media_urls and not adding:
            return  # nothing of this submit is kept here
        # Always the whole account's bytes (uploads belong to an account, not a key); a key's own
        # max_stored_mb only sets a different quota for its requests.
        kept = await self.calls.read(self.store.stored_bytes, key.account_id, now_ms())
        quota = limits.max_stored_mb * 1024 * 1024
        if kept + adding > quota or (not media_urls and kept >= quota):
            raise StorageQuotaExceeded(
                f"Stored reference quota exceeded: {kept / 2**20:.1f} MB of uploads and data: references are"
                f" kept for this account and its quota is {limits.max_stored_mb} MB;"
                " wait for earlier tasks and uploads to finish or expire, or send images as URLs.",
                retry_after_s=STORED_FULL_RETRY_S,
            )

    async def _record_stored(self, key: ApiKey, task: NewTask, sent: tuple[str, ...]) -> None:
        """Count the ``data:`` references of ``task`` (as ``sent``) against the client's quota."""
        if not any(inputs.is_inline(url) for url in sent):
            return
        # Counted while the task waits or runs; the row itself goes when the task could no longer be running.
        expires = now_ms() + int((self.settings.task_timeout_seconds + 3600) * 1000)
        stored = [
            StoredInput(inputs.input_key(task.task_id, n), key.account_id, key.key_id, task.task_id,
                        inputs.inline_size(url), expires)
            for n, url in enumerate(sent, start=1)
            if inputs.is_inline(url)
        ]  # fmt: skip
        try:
            await self.calls.write(self.store.record_stored, stored)
        except Exception:
            log.warning("could not count the stored references of task %s", task.task_id, exc_info=True)

    async def record_upload(self, account_id: str, object_key: str, size: int, keep_s: float) -> None:
        stored = StoredInput(object_key, account_id, None, None, size, now_ms() + int(keep_s * 1000))
        await self.calls.write(self.store.record_stored, [stored])

    async def _new_task(self, key: ApiKey, request_id: str, req: TaskRequest) -> NewTask:
        width, height = sizes.frame_size(req.resolution, req.ratio)
        task_id = uuid4_text()
        media_urls = req.media_urls
        if any(inputs.is_inline(url) for url in media_urls):
            # Decoding and storing megabytes must not hold up the event loop.
            media_urls = await run_in_threadpool(
                inputs.stash, self.storage, task_id, media_urls, self.settings.work_dir / "submits"
            )
        return NewTask(
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
            callback_url=req.callback_url,
        )

    async def _discard_inputs(self, task: NewTask) -> None:
        await run_in_threadpool(inputs.discard, self.storage, inputs.keys_of(task.task_id, task.media_urls))

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

    def expires_at_s(self, task: Task) -> int:
        """When the task and its video are purged (epoch seconds): retention counts from the submit."""
        return task.submit_time_ms // 1000 + int(self.settings.retention_seconds)

    def result_file(self, task: Task) -> Path | None:
        """The finished video as a local file, where storage is a local directory (None otherwise: then
        :meth:`result_link` is the way to it)."""
        if not task.result_key or not isinstance(self.storage, LocalStorage):
            return None
        return self.storage.path_for(task.result_key)

    async def thumbnail(self, task: Task) -> bytes | None:
        """A JPEG of the finished video's first frame, made on first request and kept beside the result
        (deleted with it); None when the task has no stored video."""
        if not task.result_key:
            return None
        key = thumbnail_key(task.result_key)
        return await run_in_threadpool(self._thumbnail, task.result_key, key)

    def _thumbnail(self, result_key: str, key: str) -> bytes | None:
        kept = self.storage.read_bytes(key, MAX_RESULT_READ_BYTES)
        if kept is not None:
            return kept
        if isinstance(self.storage, LocalStorage):
            path = self.storage.path_for(result_key)
            if not path.is_file():
                return None
            still = first_frame_jpeg(path)
        else:
            video = self.storage.read_bytes(result_key, MAX_RESULT_READ_BYTES)
            if video is None:
                return None
            still = first_frame_jpeg(io.BytesIO(video))
        scratch = self.settings.work_dir / "thumbnails"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=scratch, prefix="thumb-", suffix=".jpg") as tmp:
            tmp.write(still)
            tmp.flush()
            # Two first requests at once make the same still; whichever put lands last is kept.
            self.storage.put_file(key, Path(tmp.name), "image/jpeg")
        return still

    async def delete_task(self, key: ApiKey, task_id: str) -> Task | None:
        """Remove the key's account's task whatever its status, and its stored objects; the task as it was,
        or None when the account has no such task. A PENDING task is gone before any worker takes it; a
        RUNNING one's worker loses it at its next heartbeat (within a second), stops, and its finish is
        refused, so it stores nothing."""
        task = await self.calls.write(self.store.delete_task, task_id, key.account_id)
        if task is None:
            return None
        doomed = inputs.keys_of(task.task_id, task.media_urls)
        if task.result_key:
            doomed += [task.result_key, thumbnail_key(task.result_key)]
        await run_in_threadpool(inputs.discard, self.storage, doomed)
        return task
