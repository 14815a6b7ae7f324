"""Per-client limits at the API: request rates counted in the store, so they hold across API replicas.

A rate is counted in one-second windows per scope (an account, or a key that overrides the account's
limit). Every replica takes units of the current window from the store (``TaskStore.take_rate``), several at
a time when the limit is large, and spends them locally: the store is asked about once per
``limit / UNITS_PER_TAKE_DIVISOR`` requests, so a limit costs the query path one round trip per window and
scope, not one per request. What one replica took and did not spend is lost when the window ends; so
replicas together never admit more than the limit, and may admit a few fewer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from videosynth.api.storecalls import StoreCalls
from videosynth.errors import RateLimited
from videosynth.settings import Settings
from videosynth.tasks.models import ApiKey, Limits, QueueCap

#: A replica takes a tenth of a scope's limit per trip to the store (at least 1, at most MAX_UNITS_PER_TAKE).
UNITS_PER_TAKE_DIVISOR = 10
MAX_UNITS_PER_TAKE = 1000
_MAX_SCOPES = 50_000


@dataclass(frozen=True)
class EffectiveLimits:
    """What one key may do: its own limits, else its account's, else the server's defaults; 0 is off."""

    submit_rps: int
    query_rps: int
    max_queued: int
    max_stored_mb: int
    #: Which limits the key sets itself (counted for the key alone) rather than inherits (counted for its
    #: whole account).
    own: frozenset[str]

    @classmethod
    def of(cls, key: ApiKey, settings: Settings) -> EffectiveLimits:
        defaults = Limits(
            submit_rps=settings.submit_rps,
            query_rps=settings.query_rps,
            max_queued=settings.max_queued,
            max_stored_mb=settings.max_stored_mb,
        )
        merged = key.limits.over(key.account_limits).over(defaults)
        return cls(
            submit_rps=merged.submit_rps or 0,
            query_rps=merged.query_rps or 0,
            max_queued=merged.max_queued or 0,
            max_stored_mb=merged.max_stored_mb or 0,
            own=frozenset(f for f in Limits.FIELDS if getattr(key.limits, f) is not None),
        )

    def scope(self, key: ApiKey, limit: str) -> str:
        return f"{limit}:key:{key.key_id}" if limit in self.own else f"{limit}:account:{key.account_id}"

    def queue_cap(self) -> QueueCap | None:
        return QueueCap(self.max_queued, per_key="max_queued" in self.own) if self.max_queued > 0 else None

    def describe(self) -> dict[str, int]:
        return {
            "submit_rps": self.submit_rps,
            "query_rps": self.query_rps,
            "max_queued": self.max_queued,
            "max_stored_mb": self.max_stored_mb,
        }


class RateLimiter:
    def __init__(self, calls: StoreCalls, clock: Callable[[], float] = time.time) -> None:
        self._calls = calls
        self._clock = clock
        # scope -> (window, units taken from the store and not spent yet)
        self._held: dict[str, tuple[int, int]] = {}
        self._taking: dict[str, asyncio.Future[None]] = {}

    async def admit(self, scope: str, limit: int) -> None:
        """Spend one unit of ``scope``'s current window, or raise :class:`RateLimited`."""
        if limit <= 0:
            return
        while True:
            window = int(self._clock())
            held = self._held.get(scope)
            if held is not None and held[0] == window and held[1] > 0:
                self._held[scope] = (window, held[1] - 1)
                return
            if held is not None and held[0] == window and scope not in self._taking and held[1] < 0:
                # The store said this window is used up: no need to ask again until it ends.
                raise RateLimited(retry_after_s=1)
            pending = self._taking.get(scope)
            if pending is not None:  # another request is at the store for this scope: share its take
                await asyncio.shield(pending)
                continue
            await self._take(scope, window, limit)

    async def _take(self, scope: str, window: int, limit: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._taking[scope] = done
        try:
            want = max(1, min(MAX_UNITS_PER_TAKE, limit // UNITS_PER_TAKE_DIVISOR))
            granted = await self._calls.write(self._calls.store.take_rate, scope, window, want, limit)
            if len(self._held) >= _MAX_SCOPES:
                self._held.clear()
            # -1 marks a window the store refused, so the callers waiting on this take give up at once.
            self._held[scope] = (window, granted if granted > 0 else -1)
        finally:
            del self._taking[scope]
            done.set_result(None)
