"""Authentication: found keys are remembered for at most KEY_TTL_S, unknown tokens never."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from videosynth.api.auth import KEY_TTL_S, Authenticator
from videosynth.api.storecalls import StoreCalls
from videosynth.apikeys import display_prefix, hash_key
from videosynth.errors import MissingApiKey, UnknownApiKey
from videosynth.tasks.sqlite import SqliteTaskStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> SqliteTaskStore:
    s = SqliteTaskStore(tmp_path / "db.sqlite")
    s.migrate()
    return s


def test_a_revoked_key_works_until_the_ttl_and_no_longer(store: SqliteTaskStore) -> None:
    clock = Clock()
    auth = Authenticator(StoreCalls(store), clock)
    key = store.create_key("k", hash_key("sk-one"), display_prefix("sk-one"), 0)
    assert asyncio.run(auth.authenticate("Bearer sk-one")).key_id == key.key_id
    assert store.revoke_key(key.key_id, 1)
    clock.now += KEY_TTL_S * 0.9
    assert asyncio.run(auth.authenticate("Bearer sk-one")).key_id == key.key_id  # still remembered
    clock.now += KEY_TTL_S * 0.2
    with pytest.raises(UnknownApiKey):
        asyncio.run(auth.authenticate("Bearer sk-one"))


def test_unknown_tokens_are_not_remembered(store: SqliteTaskStore) -> None:
    auth = Authenticator(StoreCalls(store), Clock())
    with pytest.raises(UnknownApiKey):
        asyncio.run(auth.authenticate("Bearer sk-new"))
    store.create_key("k", hash_key("sk-new"), display_prefix("sk-new"), 0)
    assert asyncio.run(auth.authenticate("Bearer sk-new")).name == "k"  # at once, not after the TTL


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic sk-one", "sk-one"])
def test_missing_tokens(store: SqliteTaskStore, header: str | None) -> None:
    with pytest.raises(MissingApiKey):
        asyncio.run(Authenticator(StoreCalls(store), Clock()).authenticate(header))
