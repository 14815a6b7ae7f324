"""HMAC link signing for locally served files: no key in the URL, only an expiry and a signature."""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(secret: str, key: str, expires_at_s: int) -> str:
    mac = hmac.new(secret.encode(), f"{key}\n{expires_at_s}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(secret: str, key: str, expires_at_s: int, signature: str, now_s: float) -> bool:
    if expires_at_s < now_s or not signature.isascii():  # compare_digest takes ASCII strings only
        return False
    return hmac.compare_digest(sign(secret, key, expires_at_s), signature)
