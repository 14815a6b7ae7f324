"""The delivery pump: a worker process's thread that makes due webhook deliveries.

Every worker process runs one. Deliveries are claimed from the store with a lease (so any number of pumps on
any number of machines share them, and one whose process died is picked up by another once its lease ends),
sent concurrently, and each try is recorded: delivered on a 2xx, due again after the schedule's next delay
otherwise, given up when the schedule is spent. A delivery's id is its ``webhook-id`` on every try.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from videosynth.errors import StoreError
from videosynth.media.fetch import PostOutcome, post_guarded
from videosynth.observability import metrics
from videosynth.tasks.models import Delivery, DeliveryAttempt, WebhookSecrets
from videosynth.tasks.store import TaskStore
from videosynth.webhooks.schedule import RetrySchedule
from videosynth.webhooks.signing import new_secret, signed_headers

log = logging.getLogger(__name__)
USER_AGENT = "videosynth-webhooks/1.0"
#: How long an account's secrets are remembered: a rotation reaches every pump within this.
SECRETS_TTL_S = 1.0
#: A claim outlives the longest try by this much, so a slow but live pump never has its delivery taken.
LEASE_MARGIN_S = 30.0


@dataclass(frozen=True)
class RenderedBody:
    body: bytes
    content_type: str


#: What a delivery says: the API dialect's words for the event (the pump never looks inside).
Render = Callable[[Delivery], RenderedBody]
Post = Callable[[str, bytes, Mapping[str, str]], PostOutcome]


@dataclass(frozen=True)
class PumpSettings:
    allow_private: bool = False
    timeout_s: float = 10.0
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    concurrency: int = 8
    poll_s: float = 1.0


class DeliveryPump:
    def __init__(
        self,
        store: TaskStore,
        render: Render,
        settings: PumpSettings,
        *,
        post: Post | None = None,
        clock: Callable[[], float] = time.time,
        pump_id: str | None = None,
    ) -> None:
        self._store = store
        self._render = render
        self._settings = settings
        self._post: Post = post or (
            lambda url, body, headers: post_guarded(
                url, body, headers, allow_private=settings.allow_private, timeout_s=settings.timeout_s
            )
        )
        self._clock = clock
        self.pump_id = pump_id or f"pump-{uuid.uuid4().hex[:12]}"
        self._secrets: dict[str, tuple[float, WebhookSecrets]] = {}
        self._slots = threading.Semaphore(settings.concurrency)
        self._wake = threading.Event()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _account_secrets(self, account_id: str) -> WebhookSecrets:
        now = time.monotonic()
        cached = self._secrets.get(account_id)
        if cached is not None and now - cached[0] < SECRETS_TTL_S:
            return cached[1]
        found = self._store.webhook_secrets(account_id, new_secret)
        self._secrets[account_id] = (now, found)
        return found

    def deliver(self, delivery: Delivery) -> bool:
        """Make one try of a claimed delivery and record it; True when it was delivered."""
        started = self._clock()
        started_ms = int(started * 1000)
        try:
            rendered = self._render(delivery)
            secrets = self._account_secrets(delivery.event.account_id).signing(started_ms)
        except StoreError:
            raise
        except Exception:  # a bug in a renderer must not stop the pump; the try counts and is retried
            log.exception("could not render delivery %s", delivery.delivery_id)
            outcome = PostOutcome(status_code=None, error="internal error while preparing the delivery")
        else:
            headers = {
                **signed_headers(secrets, delivery.delivery_id, int(started), rendered.body),
                "content-type": rendered.content_type,
                "user-agent": USER_AGENT,
                "videosynth-event": f"task.{delivery.event.kind}",
            }
            outcome = self._post(delivery.url, rendered.body, headers)
        duration_ms = max(0, int((self._clock() - started) * 1000))
        delay = None if outcome.ok else self._settings.schedule.next_delay_s(delivery.tries + 1)
        recorded = self._store.record_attempt(
            delivery.delivery_id,
            self.pump_id,
            DeliveryAttempt(
                delivery.attempts + 1, started_ms, duration_ms, outcome.status_code, outcome.error
            ),
            delivered=outcome.ok,
            next_attempt_ms=None if delay is None else self._now_ms() + int(delay * 1000),
        )
        outcome_name = "delivered" if outcome.ok else ("retrying" if delay is not None else "failed")
        metrics.WEBHOOK_DELIVERIES.labels(outcome_name).inc()
        log.info(
            "webhook delivery",
            extra={
                "delivery_id": delivery.delivery_id,
                "task_id": delivery.event.task_id,
                "event": str(delivery.event.kind),
                "status_code": outcome.status_code,
                "error": outcome.error,
                "retry_in_s": delay,
                "recorded": recorded,
            },
        )
        return outcome.ok

    def _claim(self, want: int) -> list[Delivery]:
        lease_ms = int((self._settings.timeout_s + LEASE_MARGIN_S) * 1000)
        return self._store.claim_deliveries(self.pump_id, self._now_ms(), lease_ms, want)

    def run(self, stop: threading.Event) -> None:
        """Claim and send until ``stop`` is set; tries in flight then finish (each within ``timeout_s``)."""
        with ThreadPoolExecutor(self._settings.concurrency, thread_name_prefix="webhook") as pool:
            while not stop.is_set():
                # Cleared before claiming: a try that ends meanwhile wakes the wait below at once.
                self._wake.clear()
                free = 0
                while self._slots.acquire(blocking=False):
                    free += 1
                try:
                    claimed = self._claim(free) if free else []
                except StoreError as exc:
                    log.warning("webhook pump: store unavailable: %s", exc)
                    claimed = []
                for _ in range(free - len(claimed)):
                    self._slots.release()
                for delivery in claimed:
                    pool.submit(self.deliver, delivery).add_done_callback(self._done)
                # Until a try ends (a slot frees, or a task's next delivery may be due now) or the next poll.
                self._wake.wait(self._settings.poll_s)

    def _done(self, future: Future[bool]) -> None:
        self._slots.release()
        exc = future.exception()
        if exc is not None:
            log.warning("webhook delivery failed to record: %s", exc)
        self._wake.set()

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="webhook-pump", daemon=True)
        thread.start()
        return thread
