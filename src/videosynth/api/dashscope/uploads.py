"""The dashscope SDK's temporary-upload flow, in its own field names.

The SDK asks ``GET /api/v1/uploads?action=getPolicy`` for a policy, POSTs the file as a multipart form to
the policy's ``upload_host`` (without a Bearer key: the signed policy is the credential), and submits
``oss://<key>`` with ``X-DashScope-OssResourceResolve: enable``. ``upload_host`` points at this server;
the policy itself is :mod:`videosynth.uploads`'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from videosynth import uploads
from videosynth.api.dashscope.errors import BODY_INVALID, WireRefusal
from videosynth.errors import InvalidRequest

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

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


# --- the form upload, streamed --------------------------------------------------------------------------

MAX_FIELDS = 20
MAX_FIELD_BYTES = 16 * 1024
POLICY_REFUSED = "Invalid according to Policy: Policy expired or signature mismatch."


@dataclass
class ReceivedUpload:
    """The form's text fields and where its file was written (``None``: the form had no file part)."""

    fields: dict[str, str]
    object_key: str
    file: Path | None = None
    size: int = 0


class _FormReader:
    """Callbacks of a streaming multipart parser, in the order OSS forms arrive: text fields, then the file.

    Nothing of the file is stored until the fields before it carried a valid policy, signature and key; its
    bytes are counted as they arrive, so an unsigned or oversized upload costs what arrived, not the file."""

    def __init__(self, secret: str, scratch: Path, now_s: float) -> None:
        self._secret = secret
        self._scratch = scratch
        self._now_s = now_s
        self.fields: dict[str, str] = {}
        self.policy: uploads.Policy | None = None
        self.object_key = ""
        self.file: Path | None = None
        self.size = 0
        self._out: BinaryIO | None = None
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._in_file = False
        self._done = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name.extend(data[start:end])

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value.extend(data[start:end])

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        self._name = name.decode("utf-8", "replace") if name is not None else None
        if self._name == "file" and not self._done:
            self._start_file()
        elif len(self.fields) >= MAX_FIELDS:
            raise InvalidRequest(f"The form has more than {MAX_FIELDS} fields.")

    def _start_file(self) -> None:
        self.policy = uploads.verify(
            self._secret, self.fields.get("policy", ""), self.fields.get("Signature", ""), self._now_s
        )
        if self.policy is None:
            raise WireRefusal(403, "AccessDenied", POLICY_REFUSED)
        self.object_key = self.fields.get("key", "")
        if not uploads.key_in_dir(self.object_key, self.policy.upload_dir):
            raise InvalidRequest("The form needs a key inside the policy's upload_dir and a file.")
        self.file = self._scratch / "file"
        self._out = self.file.open("wb")
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            assert self._out is not None and self.policy is not None
            self.size += end - start
            if self.size > self.policy.max_bytes:
                raise InvalidRequest(file_too_big())
            self._out.write(data[start:end])
        elif not self._done:
            self._value.extend(data[start:end])
            if len(self._value) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"A form field is longer than {MAX_FIELD_BYTES} bytes.")

    def _part_end(self) -> None:
        if self._in_file:
            assert self._out is not None
            self._out.close()
            self._out = None
            self._in_file = False
            self._done = True  # OSS ignores whatever follows the file
        elif not self._done and self._name is not None:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def file_too_big() -> str:
    return f"Invalid file size. The file size must be less than {uploads.MAX_FILE_MB}MB."


async def receive_upload(request: Request, secret: str, scratch: Path) -> ReceivedUpload:
    """Read the SDK's multipart upload form into ``scratch``, refusing it as early as the bytes allow."""
    limit = (uploads.MAX_FILE_MB + 1) * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise InvalidRequest(file_too_big())
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise WireRefusal(BODY_INVALID.status, BODY_INVALID.code, BODY_INVALID.message)
    reader = _FormReader(secret, scratch, time.time())
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError:  # MultipartParseError, and a boundary the parser refuses (over 256 bytes)
        raise WireRefusal(BODY_INVALID.status, BODY_INVALID.code, BODY_INVALID.message) from None
    finally:
        reader.close()
    if reader.file is None or reader._in_file:
        raise InvalidRequest("The form needs a key inside the policy's upload_dir and a file.")
    return ReceivedUpload(reader.fields, reader.object_key, reader.file, reader.size)
