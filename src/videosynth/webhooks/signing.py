"""Standard Webhooks signatures (https://www.standardwebhooks.com): ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per secret that signs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh secret in the ``whsec_<base64>`` form receivers' libraries take as is."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secrets_: Sequence[str], message_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,`` signature per secret, space-separated, so a receiver
    that knows either secret of a rotation accepts it."""
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode()
        for s in secrets_
    )


def signed_headers(
    secrets_: Sequence[str], message_id: str, timestamp_s: int, body: bytes
) -> Mapping[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature(secrets_, message_id, timestamp_s, body),
    }
