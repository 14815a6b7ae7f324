"""API keys: ``sk-`` plus 48 hex characters.

The store keeps only their SHA-256: keys are random, so a fast hash is enough."""

from __future__ import annotations

import hashlib
import secrets


def new_api_key() -> str:
    return "sk-" + secrets.token_hex(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:10]
