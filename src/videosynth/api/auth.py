"""Bearer-key authentication, shared by every dialect: a token in, the key (and its account) out."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from videosynth.apikeys import hash_key
from videosynth.errors import MissingApiKey, UnknownApiKey
from videosynth.tasks.models import ApiKey
from videosynth.tasks.store import TaskStore


class Authenticator:
    def __init__(self, store: TaskStore) -> None:
        self._store = store

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The active key named by an ``Authorization: Bearer <key>`` header value."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise MissingApiKey()
        key = await run_in_threadpool(self._store.find_key, hash_key(token))
        if key is None:
            raise UnknownApiKey()
        return key
