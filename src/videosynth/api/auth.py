"""Bearer-key authentication, shared by every dialect: a token in, the key (and its account) out."""

from __future__ import annotations

import time
from collections.abc import Callable

from videosynth.api.storecalls import StoreCalls
from videosynth.apikeys import hash_key
from videosynth.errors import MissingApiKey, UnknownApiKey
from videosynth.observability.logs import bind
from videosynth.tasks.models import ApiKey

#: How long a found key is trusted without asking the store again: a revoked key stops working within this,
#: on every replica, since each keeps its own cache.
KEY_TTL_S = 1.0
_MAX_CACHED_KEYS = 10_000


class Authenticator:
    """Finds the active key for a token. Keys found are remembered for :data:`KEY_TTL_S`: the store lookup
    (and on PostgreSQL its round trip) is most of the cost of an authenticated poll. Unknown tokens are
    never remembered, so a key created a moment ago works at once."""

    def __init__(self, calls: StoreCalls, clock: Callable[[], float] = time.monotonic) -> None:
        self._calls = calls
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey]] = {}

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The active key named by an ``Authorization: Bearer <key>`` header value."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise MissingApiKey()
        digest = hash_key(token)
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            bind(account=hit[1].account_id)
            return hit[1]
        key = await self._calls.read(self._calls.store.find_key, digest)
        if key is None:
            self._cache.pop(digest, None)
            raise UnknownApiKey()
        if len(self._cache) >= _MAX_CACHED_KEYS:
            self._cache.clear()  # many distinct keys at once: start over rather than grow
        self._cache[digest] = (now + KEY_TTL_S, key)
        bind(account=key.account_id)
        return key
