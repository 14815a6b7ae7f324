"""Log lines: one JSON object per line (or plain text on a terminal), with the request or task they belong to,
and with secrets redacted as a last line of defence.

Context: :func:`bound` (a ``with`` block around a task, a request) and :func:`bind` (more fields for the block
already open) put ``request_id``, ``task_id`` and ``account`` on every line logged inside it. They live in a
:mod:`contextvars` variable, so concurrent requests on one event loop each see their own; a thread started
inside a block does not inherit it (threads start with an empty context).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TextIO

FORMATS = ("json", "text")
CONTEXT_FIELDS = ("request_id", "task_id", "account")

# One dict per block: bind() adds to it in place, so fields bound deep in a request (the account, found by the
# authenticator) reach the lines the request logs afterwards, even from the threads it hands work to.
_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "videosynth_log_context", default=None
)


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Put ``fields`` (and those of the enclosing block) on every line logged inside the block."""
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def open_context(**fields: str) -> contextvars.Token[dict[str, str] | None]:
    """:func:`bound` for code that cannot hold a ``with`` block (an ASGI middleware); undo with
    :func:`close_context`."""
    return _CONTEXT.set(dict(fields))


def close_context(token: contextvars.Token[dict[str, str] | None]) -> None:
    _CONTEXT.reset(token)


def bind(**fields: str) -> None:
    """Add ``fields`` to the current block's context (e.g. ``bind(account=key.account_id)`` once a request is
    authenticated). Outside any block they hold for the rest of the current context."""
    current = _CONTEXT.get()
    if current is None:
        _CONTEXT.set(dict(fields))
    else:
        current.update(fields)


def current_context() -> Mapping[str, str]:
    return dict(_CONTEXT.get() or {})


# --- redaction ---------------------------------------------------------------------------------------------
# Query parameters and fields that carry a credential or a URL's signature (S3, OSS, GCS, Azure SAS, ours).
_SECRET_PARAMS = (
    r"signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-oss-signature|x-oss-credential"
    r"|x-oss-security-token|ossaccesskeyid|security-token|x-goog-signature|x-goog-credential|sig|expires"
    r"|token|access_token"
)
_SECRET_FIELDS = _SECRET_PARAMS + r"|authorization|api_key|apikey|password|secret|secret_access_key"
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Inline images first: they are the longest, and nothing in them is worth reading.
    (re.compile(r"(?i)(data:[^;,\s\"']{0,100};base64,)[A-Za-z0-9+/_=-]+"), r"\1***"),
    # A header as text or in a mapping: the whole value, whatever its scheme.
    (re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n]+"), r"\1***"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
    # Our API keys (videosynth.apikeys) and DashScope's look alike: sk- and a long random tail.
    (re.compile(r"\bsk-[A-Za-z0-9][A-Za-z0-9_-]{5,}"), "sk-***"),
    # Webhook signing secrets (videosynth.webhooks.signing), in the Standard Webhooks form.
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{6,}"), "whsec_***"),
    (re.compile(rf"(?i)([?&;]|\b)({_SECRET_PARAMS})=[^&\s\"'#<>]+"), r"\1\2=***"),
    (re.compile(rf"(?i)([\"'](?:{_SECRET_FIELDS})[\"']\s*:\s*[\"'])[^\"']*"), r"\1***"),
)


def redact(text: str) -> str:
    """``text`` without API keys, webhook secrets, Authorization values, URL signatures and inline base64 payloads."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


# --- formatters --------------------------------------------------------------------------------------------
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field
# (but for uvicorn's copy of its message with terminal colours).
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _context_of(record: logging.LogRecord) -> dict[str, str]:
    context = dict(_CONTEXT.get() or {})
    for name in CONTEXT_FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            context[name] = str(value)
    return {name: context[name] for name in CONTEXT_FIELDS if name in context}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the bound context, ``extra=`` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_context_of(record),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRS and name not in CONTEXT_FIELDS and not name.startswith("_"):
                line[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [context]: message``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {record.name}"
        context = _context_of(record)
        if context:
            head += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        text = f"{head}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return redact(text)


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {fmt!r} (use json or text)")


def resolve_format(requested: str | None, stream: TextIO) -> str:
    """The format asked for, else text for a person at a terminal and JSON for a log collector."""
    if requested:
        formatter(requested)  # fails on an unknown one
        return requested
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a replaced or closed stream: not a terminal
        return "json"


def configure_logging(fmt: str, level: str | int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record of this process, uvicorn's included, through one handler in ``fmt``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # uvicorn's loggers keep no handlers of their own (see videosynth.api.server.uvicorn_config): they
    # propagate here, so its lines are formatted (and redacted) like ours.
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    logging.captureWarnings(True)
