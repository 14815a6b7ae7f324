"""The dashscope SDK's temporary-upload flow, in its own field names.

The SDK asks ``GET /api/v1/uploads?action=getPolicy`` for a policy, POSTs the file as a multipart form to
the policy's ``upload_host`` (without a Bearer key: the signed policy is the credential), and submits
``oss://<key>`` with ``X-DashScope-OssResourceResolve: enable``. ``upload_host`` points at this server;
the policy itself is :mod:`videosynth.uploads`'.
"""

from __future__ import annotations

from videosynth import uploads

UPLOAD_PATH = "/api/v1/uploads/oss"


def policy_data(policy: uploads.IssuedPolicy, public_url: str) -> dict[str, str]:
    """The ``data`` of a getPolicy answer: the seven keys the SDK requires, plus the informational ones."""
    return {
        "policy": policy.policy,
        "signature": policy.signature,
        "upload_dir": policy.upload_dir,
        "upload_host": f"{public_url}{UPLOAD_PATH}",
        "expire_in_seconds": str(policy.ttl_s),
        "max_file_size_mb": str(policy.max_bytes // (1024 * 1024)),
        "capacity_limit_mb": "999999999",
        "oss_access_key_id": "videosynth",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }
