"""The unmodified dashscope SDK (2.0.2), v1 and v2 styles, against a real server."""

from __future__ import annotations

import dashscope
import pytest
from dashscope import VideoSynthesis

from conftest import ImageServer, LiveServer, write_image


@pytest.fixture
def refs(image_server: ImageServer) -> list[dict]:
    write_image(image_server.root / "a.png", 640, 480, seed=1)
    write_image(image_server.root / "b.jpg", 640, 480, seed=2)
    return [
        {"type": "reference_image", "url": image_server.url("a.png")},
        {"type": "reference_image", "url": image_server.url("b.jpg")},
    ]


def test_v1_async_call_and_wait(live_server: LiveServer, worker, refs: list[dict], monkeypatch) -> None:
    monkeypatch.setattr(dashscope, "base_http_api_url", live_server.api)
    rsp = VideoSynthesis.async_call(
        api_key=live_server.key,
        model="happyhorse-1.1-r2v",
        prompt="[Image 1] 特写，推近。[Image 2] wide shot, pan left.",
        media=refs,
        resolution="720P",
        ratio="9:16",
        duration=3,
        watermark=True,
        seed=7,
    )
    assert rsp.status_code == 200, rsp
    assert rsp.output.task_status == "PENDING"
    result = VideoSynthesis.wait(rsp, api_key=live_server.key)
    assert result.status_code == 200
    assert result.output.task_status == "SUCCEEDED", result
    assert result.output.video_url.startswith(live_server.base_url)
    assert result.usage.duration == 3
    fetched = VideoSynthesis.fetch(rsp, api_key=live_server.key)
    assert fetched.output.video_url == result.output.video_url


def test_v1_cancel_and_list(live_server: LiveServer, refs: list[dict], monkeypatch) -> None:
    monkeypatch.setattr(dashscope, "base_http_api_url", live_server.api)
    rsp = VideoSynthesis.async_call(
        api_key=live_server.key,
        model="happyhorse-1.0-r2v",
        prompt="[Image 1] walks",
        media=refs[:1],
        duration=3,
    )
    assert rsp.status_code == 200
    canceled = VideoSynthesis.cancel(rsp, api_key=live_server.key)
    assert canceled.status_code == 200
    listing = VideoSynthesis.list(api_key=live_server.key, status="CANCELED")
    assert listing.status_code == 200
    assert listing.output["total"] == 1
    again = VideoSynthesis.cancel(rsp, api_key=live_server.key)
    assert again.status_code == 400 and again.code == "UnsupportedOperation"
    bad = VideoSynthesis.async_call(api_key=live_server.key, model="nope", prompt="[Image 1]", media=refs[:1])
    assert bad.status_code == 400 and bad.code == "InvalidParameter"


def test_v2_client_jobs_create_and_wait(live_server: LiveServer, worker, refs: list[dict]) -> None:
    client = dashscope.Client(api_key=live_server.key, base_url=live_server.api)
    job = client.videos.jobs.create(
        model="happyhorse-1.1-r2v",
        prompt="[Image 2] low angle. [Image 1] close-up.",
        media=refs,
        resolution="720P",
        ratio="1:1",
        duration=3,
        watermark=False,
    )
    assert job.task_id and job.status == "PENDING"
    done = client.videos.jobs.wait(job, poll_interval=0.2, max_interval=0.5, timeout=120)
    assert done.status == "SUCCEEDED"
    assert done.video_url and done.video_url.startswith(live_server.base_url)
    assert done.submitted_at and done.finished_at


def test_v1_local_file_is_uploaded_and_resolved(
    live_server: LiveServer, worker, tmp_path, monkeypatch
) -> None:
    """A local path goes through the SDK's own upload flow (getPolicy + form POST) and comes back as oss://."""
    monkeypatch.setattr(dashscope, "base_http_api_url", live_server.api)
    local = write_image(tmp_path / "local ref.png", 640, 480, seed=9)
    rsp = VideoSynthesis.async_call(
        api_key=live_server.key,
        model="happyhorse-1.1-r2v",
        prompt="[Image 1] walks",
        media=[{"type": "reference_image", "url": f"file://{local}"}],
        resolution="720P",
        duration=3,
    )
    assert rsp.status_code == 200, rsp
    result = VideoSynthesis.wait(rsp, api_key=live_server.key)
    assert result.output.task_status == "SUCCEEDED", result
    assert any(k.startswith("uploads/videosynth-instant/") for k in live_server.storage.list_keys("uploads/"))


def test_v2_local_path_is_uploaded(live_server: LiveServer, worker, tmp_path) -> None:
    local = write_image(tmp_path / "ref.jpg", 640, 480, seed=10)
    client = dashscope.Client(api_key=live_server.key, base_url=live_server.api)
    job = client.videos.jobs.create(
        model="happyhorse-1.0-r2v", prompt="[Image 1] close-up", media=[{"type": "reference_image", "url": str(local)}],
        resolution="720P", duration=3,
    )  # fmt: skip
    done = client.videos.jobs.wait(job, poll_interval=0.2, max_interval=0.5, timeout=120)
    assert done.status == "SUCCEEDED"


def test_both_styles_read_answers_that_carry_progress(
    live_server: LiveServer, refs: list[dict], monkeypatch
) -> None:
    """PENDING answers carry our `progress` and `stage` extensions; the SDK takes them in its stride."""
    monkeypatch.setattr(dashscope, "base_http_api_url", live_server.api)
    rsp = VideoSynthesis.async_call(
        api_key=live_server.key, model="happyhorse-1.1-r2v", prompt="[Image 1]", media=refs[:1], duration=3
    )
    fetched = VideoSynthesis.fetch(rsp, api_key=live_server.key)
    assert fetched.status_code == 200 and fetched.output.task_status == "PENDING"
    raw = live_server.query(rsp.output.task_id)["output"]
    assert (raw["progress"], raw["stage"], raw["queue_position"]) == (0, "queued", 0)
    client = dashscope.Client(api_key=live_server.key, base_url=live_server.api)
    job = client.videos.jobs.fetch(rsp.output.task_id)
    assert job.task_id == rsp.output.task_id and job.status == "PENDING"
    behind = VideoSynthesis.async_call(
        api_key=live_server.key, model="happyhorse-1.1-r2v", prompt="[Image 1]", media=refs[:1], duration=3
    )
    assert live_server.query(behind.output.task_id)["output"]["queue_position"] == 1
    fetched = VideoSynthesis.fetch(behind, api_key=live_server.key)
    assert fetched.status_code == 200 and fetched.output.task_status == "PENDING"
    assert client.videos.jobs.fetch(behind.output.task_id).status == "PENDING"
