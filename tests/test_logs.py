"""Log lines: JSON objects with the request or task they belong to, and no secrets in them."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator

import pytest
import requests

from conftest import LiveServer
from videosynth.apikeys import new_api_key
from videosynth.observability.logs import (
    JsonFormatter,
    TextFormatter,
    bind,
    bound,
    configure_logging,
    redact,
    resolve_format,
)
from videosynth.settings import Settings


class Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    """The API's request lines (logged at DEBUG, so off unless asked for), as JSON."""
    logger = logging.getLogger("videosynth.http")
    handler = Lines(JsonFormatter())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.setLevel(level)
    logger.removeHandler(handler)


def test_a_request_line_is_json_with_its_request_id(live_server: LiveServer, access_lines: Lines) -> None:
    task_id = str(uuid.uuid4())
    r = requests.get(
        f"{live_server.api}/tasks/{task_id}",
        headers={"Authorization": f"Bearer {live_server.key}"},
        timeout=10,
    )
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert r.json()["request_id"] == rid
    records = [json.loads(line) for line in access_lines.lines]
    mine = [rec for rec in records if rec.get("request_id") == rid]
    assert len(mine) == 1, records
    line = mine[0]
    assert {"ts", "level", "logger", "message"} <= set(line)
    assert line["ts"].endswith("Z") and line["level"] == "DEBUG" and line["logger"] == "videosynth.http"
    assert line["route"] == "/api/v1/tasks/{task_id}" and line["status"] == 200
    assert f"/api/v1/tasks/{task_id}" in line["message"]
    assert live_server.key not in json.dumps(records)


def test_bound_fields_reach_every_line_of_their_block() -> None:
    handler = Lines(JsonFormatter())
    logger = logging.getLogger("videosynth.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with bound(request_id="r-1"):
            bind(account="acct-1")  # found later in the request, e.g. by the authenticator
            logger.info("inside")
            with bound(task_id="t-1"):
                logger.info("nested")
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    inside, nested, outside = (json.loads(line) for line in handler.lines)
    assert (inside["request_id"], inside["account"], inside.get("task_id")) == ("r-1", "acct-1", None)
    assert (nested["request_id"], nested["account"], nested["task_id"]) == ("r-1", "acct-1", "t-1")
    assert not {"request_id", "account", "task_id"} & set(outside)


KEY = new_api_key()
CRAFTED = [
    (f"authenticating {KEY} now", KEY),
    (f"headers: {{'Authorization': 'Bearer {KEY}', 'Accept': '*/*'}}", KEY),
    ("Authorization: Basic dXNlcjpwYXNzd29yZC1zZWNyZXQ=", "dXNlcjpwYXNzd29yZC1zZWNyZXQ="),
    ("(b'authorization', b'Bearer abcdefghijklmnop1234')", "abcdefghijklmnop1234"),
    (
        "GET https://bucket.s3.amazonaws.com/refs/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z"
        "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdef",
    ),
    (
        "fetching http://127.0.0.1:8000/files/results/t-1.mp4?Expires=1767225600&Signature=q1w2e3r4t5y6u7i8o9p0",
        "q1w2e3r4t5y6u7i8o9p0",
    ),
    (
        "https://x.oss-cn-beijing.aliyuncs.com/a.png?OSSAccessKeyId=LTAIexample123&Signature=abc%2Bdef%3D",
        "LTAIexample123",
    ),
    ("upload fields {'OSSAccessKeyId': 'LTAIexample', 'Signature': 'c2lnbmF0dXJl'}", "c2lnbmF0dXJl"),
    ("callback https://hooks.example/x?token=s3cr3t-t0k3n-value", "s3cr3t-t0k3n-value"),
    ("signing with whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("media url data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUgAA" * 10, "iVBORw0KGgoAAAANSUhEUgAA"),
]


@pytest.mark.parametrize(("line", "secret"), CRAFTED)
def test_redaction_removes_the_secret(line: str, secret: str) -> None:
    redacted = redact(line)
    assert secret not in redacted, redacted
    assert "***" in redacted


def test_redaction_keeps_what_is_not_secret() -> None:
    for line in (
        "task 27d9e70f-3394-4c7f-91b8-8eb74b4ec5a6 SUCCEEDED: queued 0.002 s, media 0.011 s",
        "no bearer token given",
        "the disk-full handler ran",
        "GET /api/v1/tasks/abc 200 0.8 ms",
        "https://example.com/a.png?size=large",
    ):
        assert redact(line) == line
    # What a reader needs survives: the host and path of a signed link, the kind of a data: URL, a key's kind.
    assert redact("https://h/x.png?Signature=abc&size=1") == "https://h/x.png?Signature=***&size=1"
    assert redact("data:image/png;base64,AAAABBBBCCCC") == "data:image/png;base64,***"
    assert redact(f"key {KEY}") == "key sk-***"


def test_both_formatters_redact_messages_arguments_and_tracebacks() -> None:
    def record() -> logging.LogRecord:
        try:
            raise RuntimeError(f"upstream said no to Bearer {KEY}")
        except RuntimeError:
            exc_info = sys.exc_info()
        return logging.LogRecord(
            "videosynth.x",
            logging.ERROR,
            __file__,
            1,
            "fetch %s failed",
            ("https://h/a?Signature=zzz",),
            exc_info,
        )

    line = JsonFormatter().format(record())
    parsed = json.loads(line)
    assert parsed["message"] == "fetch https://h/a?Signature=*** failed"
    assert "RuntimeError" in parsed["exc"] and KEY not in line and "zzz" not in line
    text = TextFormatter().format(record())
    assert "ERROR videosynth.x: fetch https://h/a?Signature=*** failed" in text
    assert KEY not in text and "Traceback" in text


def test_the_format_defaults_to_text_on_a_terminal_and_json_elsewhere() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format(None, Tty()) == "text"
    assert resolve_format(None, io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="log format"):
        resolve_format("xml", io.StringIO())
    assert Settings.from_environ({"VIDEOSYNTH_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ValueError, match="log format"):
        Settings.from_environ({"VIDEOSYNTH_LOG_FORMAT": "xml"})


def test_configure_logging_formats_uvicorn_lines_too() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        configure_logging("json", logging.INFO, out)
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request from Bearer %s", KEY)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    line = json.loads(out.getvalue().strip())
    assert line["logger"] == "uvicorn.error" and line["level"] == "WARNING"
    assert KEY not in line["message"]


def test_the_suite_check_sees_a_leaked_secret_and_nothing_else() -> None:
    from conftest import find_secrets

    leaked = [
        f'{{"message": "calling with {KEY}"}}',
        "2026-01-01 00:00:00,000 INFO httpx: GET http://h/x Authorization: Bearer abcdefgh12345678",
        "GET /files/results/a.mp4?Expires=1&Signature=q1w2e3r4t5 HTTP/1.1",
        "url=data:image/png;base64," + "A" * 64,
    ]
    hits = find_secrets(leaked, frozenset({KEY}))
    assert len(hits) == 4 and hits[0].startswith("an API key minted by the suite"), hits
    clean = [redact(line) for line in leaked] + [
        f"  API key: {KEY}",  # serve's banner on stdout, for the operator
        "no bearer token given",
        "data:image/png;base64,AAAA",
    ]
    assert find_secrets(clean, frozenset({KEY})) == []
