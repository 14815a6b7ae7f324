"""The OpenAI-style Videos API (/v1/videos), driven by the unmodified openai SDK against a real server and
worker, and read across dialects: a task is the same video in both."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import av
import dashscope
import openai
import pytest
import requests
from dashscope import VideoSynthesis
from PIL import Image

from conftest import ImageServer, LiveServer, make_key, write_image

MODEL = "happyhorse-1.1-r2v"


def client_for(live_server: LiveServer, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server.base_url}/v1", api_key=key or live_server.key, max_retries=0)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    return [
        write_image(tmp_path / "a.png", 640, 480, seed=1),
        write_image(tmp_path / "b.jpg", 480, 640, seed=2),
        write_image(tmp_path / "c.webp", 500, 500, seed=3),
    ]


def wait_done(client: openai.OpenAI, video_id: str, timeout: float = 180) -> Any:
    """Poll until the video is finished; a generous bound only against a hang, never a timing check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.videos.retrieve(video_id)
        if video.status in ("completed", "failed"):
            return video
        assert video.status in ("queued", "in_progress")
        assert 0 <= video.progress <= 99
        time.sleep(0.1)
    raise AssertionError(f"video {video_id} did not finish in {timeout} s")


def media_of(live_server: LiveServer, task_id: str) -> tuple[str, ...]:
    """The references recorded for a task (``get`` leaves them out: polls never read them)."""
    path = live_server.settings.database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT url FROM task_media WHERE task_id=? ORDER BY position", (task_id,)
        ).fetchall()
    return tuple(r[0] for r in rows)


def frame_size(mp4: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def test_one_file_create_retrieve_download_thumbnail_delete(
    live_server: LiveServer, worker: object, images: list[Path]
) -> None:
    client = client_for(live_server)
    created = client.videos.create(
        model=MODEL,
        prompt="[Image 1] close-up, slow push in.",
        input_reference=images[0],
        size="832x480",  # type: ignore[arg-type]  # our table's sizes are accepted as they are
        seconds=3,  # type: ignore[arg-type]
    )
    assert created.object == "video" and created.status == "queued" and created.progress == 0
    assert created.size == "832x480" and created.seconds == "3" and created.model == MODEL
    assert created.completed_at is None and created.expires_at is None and created.error is None
    assert created.prompt == "[Image 1] close-up, slow push in."

    done = wait_done(client, created.id)
    assert done.status == "completed", done.error
    assert done.progress == 100
    assert done.completed_at is not None and done.completed_at >= done.created_at
    assert done.expires_at == done.created_at + int(live_server.settings.retention_seconds)

    video = client.videos.download_content(created.id).content
    assert video[4:8] == b"ftyp"
    assert frame_size(video) == (832, 480)
    thumb = client.videos.download_content(created.id, variant="thumbnail").content
    with Image.open(io.BytesIO(thumb)) as still:
        assert still.format == "JPEG" and still.size == (832, 480)
    # Made once, then served from storage.
    assert client.videos.download_content(created.id, variant="thumbnail").content == thumb

    task = live_server.store.get(created.id)
    assert task is not None and task.result_key is not None
    deleted = client.videos.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.retrieve(created.id)
    assert missing.value.code == "video_not_found"
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(created.id)
    # Gone in the other dialect too, with its stored objects.
    assert live_server.query(created.id)["output"]["task_status"] == "UNKNOWN"
    assert not live_server.storage.exists(task.result_key)
    assert live_server.storage.list_keys("results/") == []


def test_two_files_named_in_the_prompt(live_server: LiveServer, worker: object, images: list[Path]) -> None:
    client = client_for(live_server)
    # The SDK's type names one file; a list of files is sent as repeated `input_reference[]` parts.
    created = client.videos.create(
        model=MODEL,
        prompt="[Image 1] wide shot, pan left. [Image 2] close-up, push in.",
        input_reference=[images[0], images[1]],  # type: ignore[arg-type]
        size="480x832",  # type: ignore[arg-type]
        seconds="3",  # type: ignore[arg-type]
    )
    # Stored like data: references, in the order sent.
    assert media_of(live_server, created.id) == ("input://1", "input://2")
    done = wait_done(client, created.id)
    assert done.status == "completed", done.error
    assert frame_size(client.videos.download_content(created.id).content) == (480, 832)


def test_openai_sizes_map_to_the_table_and_others_are_refused(
    live_server: LiveServer, images: list[Path]
) -> None:
    client = client_for(live_server)
    expected = {
        "720x1280": "720x1280",  # in the table already (720P 9:16)
        "1280x720": "1280x720",
        "1024x1792": "1080x1920",  # nearest ratio 9:16, nearest tier 1080P
        "1792x1024": "1920x1080",
    }
    for asked, served in expected.items():
        video = client.videos.create(
            model=MODEL,
            prompt="[Image 1] walks",
            input_reference=images[0],
            size=asked,  # type: ignore[arg-type]
        )
        assert video.size == served, asked
        task = live_server.store.get(video.id)
        assert task is not None and f"{task.params.width}x{task.params.height}" == served
    for bad in ("1000x1000", "1280X720", "big"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.videos.create(
                model=MODEL,
                prompt="[Image 1] walks",
                input_reference=images[0],
                size=bad,  # type: ignore[arg-type]
            )
        assert refused.value.param == "size" and refused.value.code == "invalid_size"
        assert "1280x720" in refused.value.message


def test_seconds_as_integer_or_string_and_defaults(live_server: LiveServer, images: list[Path]) -> None:
    client = client_for(live_server)
    for seconds, shown in ((4, "4"), ("12", "12"), (15, "15")):
        video = client.videos.create(
            model=MODEL,
            prompt="[Image 1]",
            input_reference=images[0],
            seconds=seconds,  # type: ignore[arg-type]
        )
        assert video.seconds == shown
    default = client.videos.create(prompt="[Image 1]", input_reference=images[0])
    # No model: the server's first; no size or seconds: that model's defaults.
    assert default.model == "happyhorse-1.0-r2v" and default.size == "1920x1080" and default.seconds == "5"
    for bad in (2, "16", "4.5", "four"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.videos.create(
                model=MODEL,
                prompt="[Image 1]",
                input_reference=images[0],
                seconds=bad,  # type: ignore[arg-type]
            )
        assert refused.value.param == "seconds"


def test_refusals_in_the_openai_error_shape(
    live_server: LiveServer, images: list[Path], tmp_path: Path
) -> None:
    client = client_for(live_server)
    with pytest.raises(openai.AuthenticationError) as unknown:
        client_for(live_server, key="sk-not-a-key").videos.list()
    assert unknown.value.code == "invalid_api_key"
    assert unknown.value.body == {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    with pytest.raises(openai.BadRequestError) as no_ref:
        client.videos.create(model=MODEL, prompt="a cat")
    assert no_ref.value.param == "input_reference"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.videos.create(model=MODEL, prompt="[Image 2] runs", input_reference=images[0])
    assert too_many.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as model:
        client.videos.create(model="sora-2", prompt="[Image 1]", input_reference=images[0])
    assert model.value.param == "model" and model.value.code == "model_not_found"
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(openai.BadRequestError) as not_image:
        client.videos.create(model=MODEL, prompt="[Image 1]", input_reference=text)
    assert not_image.value.code == "invalid_image_format" and not_image.value.param == "input_reference"
    with pytest.raises(openai.BadRequestError) as variant:
        client.videos.download_content("whatever", variant="spritesheet")
    assert variant.value.param == "variant"
    # Another account's video does not exist for this key.
    mine = client.videos.create(model=MODEL, prompt="[Image 1]", input_reference=images[0])
    other = client_for(live_server, key=make_key(live_server.store, "other"))
    with pytest.raises(openai.NotFoundError):
        other.videos.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.videos.delete(mine.id)
    assert client.videos.retrieve(mine.id).id == mine.id
    # Not finished: no content yet.
    with pytest.raises(openai.NotFoundError) as not_ready:
        client.videos.download_content(mine.id)
    assert not_ready.value.code == "video_not_ready"
    # Paths under /v1/ that match nothing answer in this dialect's shape.
    nothing = requests.get(
        f"{live_server.base_url}/v1/nothing", headers={"Authorization": "Bearer x"}, timeout=10
    )
    assert nothing.status_code == 404
    assert nothing.json()["error"]["type"] == "invalid_request_error"
    assert requests.get(f"{live_server.base_url}/api/v1/nothing", timeout=10).json()["code"] == "NotFound"


def test_json_bodies_take_image_urls(live_server: LiveServer, image_server: ImageServer) -> None:
    write_image(image_server.root / "a.png", 640, 480, seed=4)
    body = {
        "model": MODEL,
        "prompt": "[Image 1] then [Image 2]",
        "seconds": 3,
        "size": "832x480",
        "input_reference": [{"image_url": image_server.url("a.png")}, image_server.url("a.png")],
    }
    answer = requests.post(
        f"{live_server.base_url}/v1/videos",
        json=body,
        headers={"Authorization": f"Bearer {live_server.key}", "Idempotency-Key": "one"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    video = answer.json()
    assert media_of(live_server, video["id"]) == (image_server.url("a.png"),) * 2
    again = requests.post(
        f"{live_server.base_url}/v1/videos",
        json=body,
        headers={"Authorization": f"Bearer {live_server.key}", "Idempotency-Key": "one"},
        timeout=30,
    )
    assert again.json()["id"] == video["id"] and again.headers["idempotent-replayed"] == "true"
    bad = requests.post(
        f"{live_server.base_url}/v1/videos",
        json={**body, "input_reference": {"image_url": "ftp://x/y.png"}},
        headers={"Authorization": f"Bearer {live_server.key}"},
        timeout=30,
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input_reference"
    assert bad.headers["x-should-retry"] == "false"


def test_list_pages_with_a_cursor(live_server: LiveServer, images: list[Path]) -> None:
    client = client_for(live_server)
    made = [
        client.videos.create(model=MODEL, prompt=f"[Image 1] take {n}", input_reference=images[0]).id
        for n in range(5)
    ]
    newest_first = made[::-1]
    page = client.videos.list(limit=2)
    assert [v.id for v in page.data] == newest_first[:2] and page.has_more is True
    assert page.last_id == newest_first[1]
    second = client.videos.list(limit=2, after=page.last_id)
    assert [v.id for v in second.data] == newest_first[2:4]
    # The SDK's auto-paging follows last_id until has_more is false.
    assert [v.id for v in client.videos.list(limit=2)] == newest_first
    assert [v.id for v in client.videos.list(limit=3, order="asc")] == made
    last = client.videos.list(limit=10, after=newest_first[3])
    assert [v.id for v in last.data] == newest_first[4:] and last.has_more is False
    with pytest.raises(openai.BadRequestError):
        client.videos.list(limit=0)
    assert client_for(live_server, key=make_key(live_server.store, "other")).videos.list().data == []


def test_a_dashscope_task_is_a_video_and_a_video_is_a_dashscope_task(
    live_server: LiveServer, worker: object, image_server: ImageServer, images: list[Path], monkeypatch: Any
) -> None:
    client = client_for(live_server)
    # Created with the dashscope SDK, read through /v1/videos.
    write_image(image_server.root / "a.png", 640, 480, seed=1)
    monkeypatch.setattr(dashscope, "base_http_api_url", live_server.api)
    rsp = VideoSynthesis.async_call(
        api_key=live_server.key,
        model=MODEL,
        prompt="[Image 1] 特写，推近。",
        media=[{"type": "reference_image", "url": image_server.url("a.png")}],
        resolution="480P",
        ratio="1:1",
        duration=3,
    )
    assert rsp.status_code == 200, rsp
    task_id = rsp.output.task_id
    video = client.videos.retrieve(task_id)
    assert video.id == task_id and video.status in ("queued", "in_progress", "completed")
    assert video.size == "624x624" and video.seconds == "3"
    result = VideoSynthesis.wait(rsp, api_key=live_server.key)
    assert result.output.task_status == "SUCCEEDED"
    done = client.videos.retrieve(task_id)
    assert done.status == "completed" and done.progress == 100
    downloaded = client.videos.download_content(task_id).content
    assert downloaded == requests.get(result.output.video_url, timeout=30).content
    assert frame_size(downloaded) == (624, 624)
    assert task_id in [v.id for v in client.videos.list()]

    # Created through /v1/videos, read through /api/v1/tasks/{id}.
    created = client.videos.create(
        model=MODEL, prompt="[Image 1] pan left", input_reference=images[2], size="832x480"
    )  # type: ignore[arg-type]
    answer = live_server.wait(created.id)
    assert answer["output"]["task_status"] == "SUCCEEDED"
    assert client.videos.retrieve(created.id).status == "completed"
    linked = requests.get(answer["output"]["video_url"], timeout=30).content
    assert linked == client.videos.download_content(created.id).content
    assert answer["output"]["orig_prompt"] == "[Image 1] pan left"

    # Deleted here: UNKNOWN there.
    client.videos.delete(task_id)
    assert live_server.query(task_id)["output"]["task_status"] == "UNKNOWN"


def test_canceled_is_failed_and_deleting_a_queued_video_cancels_it(
    live_server: LiveServer, images: list[Path], monkeypatch: Any
) -> None:
    monkeypatch.setattr(dashscope, "base_http_api_url", live_server.api)
    client = client_for(live_server)
    # No worker runs here: the videos stay queued. Canceled in the DashScope dialect: failed here, with
    # the code that says why.
    pending = client.videos.create(model=MODEL, prompt="[Image 1]", input_reference=images[0])
    canceled = VideoSynthesis.cancel(pending.id, api_key=live_server.key)
    assert canceled.status_code == 200, canceled
    final = client.videos.retrieve(pending.id)
    assert final.status == "failed" and final.completed_at is not None
    assert final.error is not None and final.error.code == "canceled"
    assert client.videos.delete(pending.id).deleted
    video = client.videos.create(model=MODEL, prompt="[Image 1]", input_reference=images[0])
    assert live_server.storage.list_keys(f"inputs/{video.id}/")  # the uploaded file, kept for the worker
    assert client.videos.delete(video.id).deleted
    assert live_server.store.get(video.id) is None
    assert live_server.storage.list_keys(f"inputs/{video.id}/") == []
    assert live_server.query(video.id)["output"]["task_status"] == "UNKNOWN"
