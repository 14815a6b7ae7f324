"""Webhooks and the event stream in dialect-free terms: what an account's endpoints are, its signing
secrets, a task's deliveries, and the checks every endpoint URL passes (the media URLs' address rule)."""

from __future__ import annotations

import time
import urllib.parse
import uuid
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool

from videosynth.errors import InvalidRequest, NotFound
from videosynth.media.fetch import delivery_host_forbidden, validate_delivery_url
from videosynth.settings import Settings
from videosynth.tasks.models import ALL_EVENT_KINDS, ApiKey, Delivery, EventKind, Webhook, WebhookSecrets
from videosynth.tasks.store import TaskStore
from videosynth.webhooks.signing import new_secret

#: Endpoints per account: each delivery is one POST per endpoint, so the cap bounds what one status
#: change costs the workers.
MAX_WEBHOOKS_PER_ACCOUNT = 20


def _now_ms() -> int:
    return int(time.time() * 1000)


def check_endpoint_url(url: object, settings: Settings, what: str = "url") -> str:
    """The URL, or InvalidRequest saying what is wrong with it. Names are checked again at every delivery's
    connect, against every address they resolve to; an IP literal that can never be reached is refused now."""
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{what} must be an http or https URL.")
    problem = validate_delivery_url(url)
    if problem is not None:
        raise InvalidRequest(f"{what}: {problem}")
    if not settings.media_allow_private:
        host = urllib.parse.urlsplit(url).hostname or ""
        if delivery_host_forbidden(host):
            raise InvalidRequest(f"{what}: {host} is not a public address.")
    return url


def parse_event_kinds(value: object, allowed: Sequence[EventKind] = ALL_EVENT_KINDS) -> tuple[EventKind, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidRequest("events must be a non-empty list of: " + ", ".join(allowed) + ".")
    kinds: list[EventKind] = []
    for v in value:
        try:
            kind = EventKind(v)
        except ValueError:
            raise InvalidRequest(f"events: unknown event {v[:40]!r} (use {', '.join(allowed)}).") from None
        if kind not in allowed:
            raise InvalidRequest(f"events: {kind} is not sent in this format (use {', '.join(allowed)}).")
        if kind not in kinds:
            kinds.append(kind)
    # In the life cycle's order, however the client listed them.
    return tuple(k for k in ALL_EVENT_KINDS if k in kinds)


class Hooks:
    def __init__(self, settings: Settings, store: TaskStore) -> None:
        self.settings = settings
        self.store = store

    async def add(
        self, key: ApiKey, url: str, events: tuple[EventKind, ...], fmt: str, include_result: bool
    ) -> Webhook:
        existing = await run_in_threadpool(self.store.list_webhooks, key.account_id)
        if len(existing) >= MAX_WEBHOOKS_PER_ACCOUNT:
            raise InvalidRequest(
                f"An account has at most {MAX_WEBHOOKS_PER_ACCOUNT} webhooks; remove one first."
            )
        hook = Webhook(
            webhook_id="wh_" + uuid.uuid4().hex,
            account_id=key.account_id,
            url=check_endpoint_url(url, self.settings),
            events=events,
            format=fmt,
            include_result=include_result,
            created_ms=_now_ms(),
        )
        await run_in_threadpool(self.store.add_webhook, hook)
        return hook

    async def webhooks(self, key: ApiKey) -> list[Webhook]:
        return await run_in_threadpool(self.store.list_webhooks, key.account_id)

    async def remove(self, key: ApiKey, webhook_id: str) -> None:
        if not await run_in_threadpool(self.store.remove_webhook, key.account_id, webhook_id):
            raise NotFound(f"No webhook {webhook_id[:80]!r} in this account.")

    async def secrets(self, key: ApiKey) -> WebhookSecrets:
        return await run_in_threadpool(self.store.webhook_secrets, key.account_id, new_secret)

    async def rotate(self, key: ApiKey, overlap_s: float | None) -> WebhookSecrets:
        overlap = self.settings.webhook_secret_overlap_seconds if overlap_s is None else overlap_s
        return await run_in_threadpool(
            self.store.rotate_webhook_secret, key.account_id, new_secret(), _now_ms(), int(overlap * 1000)
        )

    async def deliveries(self, key: ApiKey, task_id: str) -> list[Delivery]:
        task = await run_in_threadpool(self.store.get, task_id)
        if task is None or task.account_id != key.account_id:
            raise NotFound(f"No task {task_id[:80]!r} in this account.")
        return await run_in_threadpool(self.store.task_deliveries, task_id, key.account_id)

    async def redeliver(self, key: ApiKey, task_id: str, delivery_id: str) -> Delivery:
        found = await run_in_threadpool(self.store.redeliver, task_id, key.account_id, delivery_id, _now_ms())
        if found is None:
            raise NotFound(f"No delivery {delivery_id[:80]!r} of task {task_id[:80]!r} to make again.")
        return found
