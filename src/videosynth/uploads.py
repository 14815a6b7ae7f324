"""Temporary uploads of local files, referenced by tasks as ``oss://<key>`` media URLs.

A client asks for an upload policy, sends the file with it (the signed policy is the credential, not an API
key), and names ``oss://<key>`` in its request. We sign the policy ourselves (HMAC) and keep the file in
storage under ``uploads/<key>``. Each policy names a directory that starts with the account id, so an
``oss://`` key can only be used by the account that uploaded it. How a dialect spells the policy and the
upload form is its own business (``videosynth.api.dashscope.uploads``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

UPLOAD_ROOT = "videosynth-instant"
STORAGE_PREFIX = "uploads/"
POLICY_TTL_S = 300
MAX_FILE_MB = 100
# The hosted service deletes uploads after 48 hours. Upload directories carry their UTC date only, so an
# upload is deleted once its date is UPLOAD_KEEP_DAYS days past: 48 to 72 hours after it arrived.
UPLOAD_KEEP_DAYS = 3
# A file name holds at most 255 bytes (NAME_MAX), and non-ASCII characters take two to four of them.
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class Policy:
    upload_dir: str
    expires_at_s: int
    max_bytes: int


def new_upload_dir(account_id: str) -> str:
    return f"{UPLOAD_ROOT}/{account_id}/{time.strftime('%Y-%m-%d', time.gmtime())}/{uuid.uuid4().hex}"


def expired_upload_keys(storage_keys: list[str], now_s: float) -> list[str]:
    """The storage keys (``uploads/...``) of uploads old enough to delete; keys of another shape are kept."""
    today = datetime.fromtimestamp(now_s, tz=UTC).date()
    expired = []
    for key in storage_keys:
        parts = key.removeprefix(STORAGE_PREFIX).split("/")
        if not key.startswith(STORAGE_PREFIX) or len(parts) < 4 or parts[0] != UPLOAD_ROOT:
            continue
        try:
            uploaded = date.fromisoformat(parts[2])
        except ValueError:
            continue
        if (today - uploaded).days >= UPLOAD_KEEP_DAYS:
            expired.append(key)
    return expired


def _sign(secret: str, policy: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), policy.encode(), hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class IssuedPolicy:
    """A signed permission to upload one file into ``upload_dir`` before it expires."""

    policy: str
    signature: str
    upload_dir: str
    ttl_s: int
    max_bytes: int


def issue(secret: str, account_id: str, now_s: float) -> IssuedPolicy:
    """A new upload policy for ``account_id``, signed with ``secret``."""
    upload_dir = new_upload_dir(account_id)
    doc = {"dir": upload_dir, "exp": int(now_s) + POLICY_TTL_S, "max": MAX_FILE_MB * 1024 * 1024}
    policy = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    return IssuedPolicy(
        policy=policy,
        signature=_sign(secret, policy),
        upload_dir=upload_dir,
        ttl_s=POLICY_TTL_S,
        max_bytes=MAX_FILE_MB * 1024 * 1024,
    )


def verify(secret: str, policy: str, signature: str, now_s: float) -> Policy | None:
    """The policy if the signature is ours and it has not expired; None otherwise."""
    if not signature.isascii() or not hmac.compare_digest(_sign(secret, policy), signature):
        return None
    try:
        doc = json.loads(base64.b64decode(policy, validate=True))
        parsed = Policy(upload_dir=str(doc["dir"]), expires_at_s=int(doc["exp"]), max_bytes=int(doc["max"]))
    except (ValueError, KeyError, TypeError):
        return None
    return parsed if parsed.expires_at_s >= now_s else None


def _plain_name(name: str) -> bool:
    return (
        bool(name)
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        # NUL would reach the filesystem; other control characters forge log lines and file listings.
        and not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name)
    )


def key_in_dir(key: str, upload_dir: str) -> bool:
    """``key`` is one plain file name directly inside ``upload_dir``."""
    return key.startswith(upload_dir + "/") and _plain_name(key[len(upload_dir) + 1 :])


def owner_of(oss_key: str) -> str | None:
    """The account an ``oss://`` key was issued to, or None when the key is not one we issue.

    Our keys are exactly ``{UPLOAD_ROOT}/{account}/{date}/{random}/{name}``: anything else (``../``,
    backslashes, extra levels) names no upload, whoever's prefix it starts with."""
    parts = oss_key.split("/")
    if len(parts) != 5 or parts[0] != UPLOAD_ROOT or not all(_plain_name(p) for p in parts):
        return None
    return parts[1]
