"""The relay's pure parts: the submit pace, the saved state, the upstream's answers in the domain's words, and
the engine's options (the end-to-end behaviour is in test_relay_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from videosynth.catalog import Catalog, ModelsFileError
from videosynth.engines.base import RelayMedia, RelayRequest, UpstreamPhase
from videosynth.engines.dashscope.client import data_url, parse_status, raise_for_answer, submit_body
from videosynth.engines.registry import create_engine
from videosynth.errors import (
    EngineError,
    UpstreamRefused,
    UpstreamThrottled,
    UpstreamUnavailable,
)
from videosynth.worker.relay import RelayState, SubmitGate


def test_the_submit_gate_slows_on_each_429_and_recovers_on_accepted_submits() -> None:
    gate = SubmitGate()
    assert gate.take(0.0) and gate.take(0.0)  # unthrottled: no spacing at all
    gate.throttled(10.0, retry_after_s=None)
    first = gate.spacing_s
    assert first == SubmitGate.MIN_SPACING_S and not gate.take(10.0) and gate.ready_at() == 10.0 + first
    gate.throttled(10.0, retry_after_s=3.0)  # the upstream's Retry-After holds every submit
    assert gate.spacing_s == 2 * first and gate.ready_at() == 13.0
    assert not gate.take(12.9) and gate.take(13.0) and not gate.take(13.0)
    for _ in range(200):
        gate.throttled(20.0, retry_after_s=None)
    assert gate.spacing_s == SubmitGate.MAX_SPACING_S
    for _ in range(200):
        gate.accepted()
    assert gate.spacing_s == 0.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, RelayState()),
        ("", RelayState()),
        ("not json", RelayState()),
        ("[1, 2]", RelayState()),
        ('{"reference": 7, "submitting_since_ms": "x"}', RelayState()),
        ('{"reference": "up-1"}', RelayState(reference="up-1")),
        ('{"submitting_since_ms": 1700000000000}', RelayState(submitting_since_ms=1700000000000)),
    ],
)
def test_a_saved_state_loads_whatever_the_table_holds(text: str | None, expected: RelayState) -> None:
    assert RelayState.load(text) == expected
    assert RelayState.load(expected.dump()) == expected


def _request(**overrides: object) -> RelayRequest:
    values: dict[str, object] = {
        "model": "happyhorse-1.1-r2v",
        "prompt": "[Image 1] walks",
        "media": (RelayMedia(index=1, url="https://example.com/a.png"),),
        "resolution": "720P",
        "ratio": "16:9",
        "duration": 5,
        "seed": 42,
        "watermark": False,
    }
    values.update(overrides)
    return RelayRequest(**values)  # type: ignore[arg-type]


def test_the_submit_body_is_the_clients_request_with_the_model_mapped() -> None:
    body = submit_body(
        _request(), "happyhorse-1.0-r2v", ["https://example.com/a.png", "data:image/png;base64,AA=="]
    )
    assert body == {
        "model": "happyhorse-1.0-r2v",
        "input": {
            "prompt": "[Image 1] walks",
            "media": [
                {"type": "reference_image", "url": "https://example.com/a.png"},
                {"type": "reference_image", "url": "data:image/png;base64,AA=="},
            ],
        },
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5, "watermark": False, "seed": 42},
    }
    media = RelayMedia(index=1, data=b"\x89PNG", mime="image/png", filename="a.png")
    assert data_url(media) == "data:image/png;base64,iVBORw=="


def test_task_answers_become_phases_progress_usage_and_codes() -> None:
    running = parse_status({"output": {"task_id": "t", "task_status": "RUNNING", "progress": 40}})
    assert (running.phase, running.progress) == (UpstreamPhase.RUNNING, 40)
    assert parse_status({"output": {"task_status": "PENDING"}}).phase is UpstreamPhase.QUEUED
    assert parse_status({"output": {"task_status": "whatever"}}).phase is UpstreamPhase.UNKNOWN
    assert parse_status({"output": {"task_status": "RUNNING", "progress": True}}).progress is None
    done = parse_status(
        {
            "output": {"task_status": "SUCCEEDED", "video_url": "https://cdn.example.com/v.mp4"},
            "usage": {"output_video_duration": 5, "duration": 5},
        }
    )
    assert (done.phase, done.result_url, done.video_seconds) == (
        UpstreamPhase.SUCCEEDED,
        "https://cdn.example.com/v.mp4",
        5.0,
    )
    failed = parse_status(
        {"output": {"task_status": "FAILED", "code": "DataInspectionFailed", "message": "unsafe input"}}
    )
    assert (failed.phase, failed.code, failed.message) == (
        UpstreamPhase.FAILED,
        "DataInspectionFailed",
        "unsafe input",
    )
    with pytest.raises(UpstreamUnavailable, match="no video link"):
        parse_status({"output": {"task_status": "SUCCEEDED"}})
    with pytest.raises(UpstreamUnavailable, match="no output"):
        parse_status({"code": "x"})


def _answer(status: int, body: object = None, headers: dict[str, str] | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers=headers or {})


def test_each_upstream_answer_means_one_domain_error() -> None:
    raise_for_answer(_answer(200, {"output": {}}), "poll")
    with pytest.raises(UpstreamThrottled) as throttled:
        raise_for_answer(_answer(429, {"code": "Throttling.RateQuota"}, {"Retry-After": "7"}), "submit")
    assert throttled.value.retry_after_s == 7.0
    with pytest.raises(UpstreamThrottled) as no_hint:
        raise_for_answer(_answer(429), "submit")
    assert no_hint.value.retry_after_s is None
    for status in (500, 503, 408):
        with pytest.raises(UpstreamUnavailable):
            raise_for_answer(_answer(status, {"code": "InternalError"}), "poll")
    with pytest.raises(UpstreamRefused) as refused:
        raise_for_answer(_answer(401, {"code": "InvalidApiKey", "message": "Invalid API-key"}), "submit")
    # Our own credentials: the client is never told its key is invalid.
    assert refused.value.upstream_code is None
    with pytest.raises(UpstreamRefused) as bad:
        raise_for_answer(_answer(400, {"code": "InvalidParameter", "message": "bad ratio"}), "submit")
    assert (bad.value.upstream_code, bad.value.detail) == ("InvalidParameter", "bad ratio")
    assert not isinstance(bad.value, UpstreamUnavailable)  # not retried


RELAY_FILE = """
[models."happyhorse-1.1-r2v"]
engine = "dashscope"
base_url = "http://127.0.0.1:9/api/v1"
api_key_env = "UPSTREAM_KEY_FOR_TESTS"
"""


def test_a_relay_model_needs_a_base_url_and_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(RELAY_FILE, encoding="utf-8")
    spec = Catalog.from_file(path).get("happyhorse-1.1-r2v")
    assert spec.options["base_url"] == "http://127.0.0.1:9/api/v1" and spec.options["poll_max_s"] == 15.0
    path.write_text(RELAY_FILE + 'api_key = "sk-in-the-file"\n', encoding="utf-8")
    with pytest.raises(ModelsFileError, match="unknown key 'api_key'"):
        Catalog.from_file(path)
    path.write_text('[models."m"]\nengine = "dashscope"\n', encoding="utf-8")
    with pytest.raises(ModelsFileError, match="needs 'base_url'"):
        Catalog.from_file(path)


def test_the_key_comes_from_the_named_variable_and_is_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(RELAY_FILE, encoding="utf-8")
    spec = Catalog.from_file(path).get("happyhorse-1.1-r2v")
    with pytest.raises(EngineError, match="UPSTREAM_KEY_FOR_TESTS"):
        create_engine(spec.engine, spec.options, environ={})
    engine = create_engine(
        spec.engine, spec.options, environ={"UPSTREAM_KEY_FOR_TESTS": "sk-secret-upstream"}
    )
    try:
        shown = json.dumps(spec.describe())
        assert "UPSTREAM_KEY_FOR_TESTS" in shown and "sk-secret-upstream" not in shown
    finally:
        engine.close()  # type: ignore[union-attr]
    bad = dict(spec.options, base_url="file:///etc/passwd")
    with pytest.raises(EngineError, match="base_url"):
        create_engine(spec.engine, bad, environ={"UPSTREAM_KEY_FOR_TESTS": "k"})
