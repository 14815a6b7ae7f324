"""Submit -> worker -> engine process -> MP4 on the embedded default, with real parts on loopback."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import av
import requests
from PIL import Image

from conftest import ImageServer, LiveServer, write_image


def probe(data: bytes) -> dict:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": stream.average_rate,
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "frames": frames,
            "duration": float(stream.duration * stream.time_base) if stream.duration else None,
        }


def r2v_body(urls: list[str], **params: object) -> dict:
    prompt = " ".join(f"[Image {i}] shot {i}." for i in range(1, len(urls) + 1))
    return {
        "model": "happyhorse-1.0-r2v",
        "input": {"prompt": prompt, "media": [{"type": "reference_image", "url": u} for u in urls]},
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5, **params},
    }


def test_seed_request_reaches_succeeded_with_exact_mp4(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    urls = []
    for i, fmt in enumerate(["PNG", "JPEG", "WEBP"]):
        ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[fmt]
        write_image(image_server.root / f"ref{i}.{ext}", 800, 600, seed=i, fmt=fmt)
        urls.append(image_server.url(f"ref{i}.{ext}"))
    r = live_server.submit(r2v_body(urls, watermark=False, seed=12345))
    assert r.status_code == 200
    task_id = r.json()["output"]["task_id"]
    body = live_server.wait(task_id)
    out = body["output"]
    assert out["task_status"] == "SUCCEEDED", body
    assert {"submit_time", "scheduled_time", "end_time", "video_url"} <= set(out)
    assert body["usage"] == {
        "duration": 5,
        "input_video_duration": 0,
        "output_video_duration": 5,
        "video_count": 1,
        "SR": 720,
        "ratio": "16:9",
    }
    video = requests.get(out["video_url"], timeout=30)
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    info = probe(video.content)
    assert (info["width"], info["height"], info["fps"], info["codec"], info["pix_fmt"]) == (
        1280,
        720,
        24,
        "h264",
        "yuv420p",
    )
    assert info["frames"] == 120
    assert abs(info["duration"] - 5.0) < 1e-6
    # Polling again gives the same link (signed from the finish time).
    assert live_server.query(task_id)["output"]["video_url"] == out["video_url"]


def _tamper(url: str, **changes: str) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunparse(parts._replace(query=urlencode(query)))


def test_video_url_is_signed_and_supports_range(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "a.png", 640, 480)
    r = live_server.submit(r2v_body([image_server.url("a.png")], duration=3))
    out = live_server.wait(r.json()["output"]["task_id"])["output"]
    assert out["task_status"] == "SUCCEEDED", out
    url = out["video_url"]
    assert url.startswith(live_server.base_url + "/files/")
    assert live_server.key not in url
    ranged = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=10)
    assert ranged.status_code == 206 and len(ranged.content) == 100
    assert ranged.headers["content-range"].startswith("bytes 0-99/")
    assert requests.head(url, timeout=10).status_code == 200
    unsigned = url.split("?")[0]
    assert requests.get(unsigned, timeout=10).status_code == 403
    assert requests.get(_tamper(url, Signature="AAAA"), timeout=10).status_code == 403
    # Moving the expiry forward breaks the signature; a correctly signed but expired link is refused too.
    expires = int(parse_qs(urlparse(url).query)["Expires"][0])
    assert requests.get(_tamper(url, Expires=str(expires + 3600)), timeout=10).status_code == 403
    key = urlparse(url).path[len("/files/") :]
    expired = live_server.storage.url_for(key, int(time.time()) - 1)
    r = requests.get(expired, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == "AccessDenied"


def test_data_url_reference(live_server: LiveServer, worker, tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", 500, 400)
    data_url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    r = live_server.submit(r2v_body([data_url], duration=3, ratio="1:1"))
    assert r.status_code == 200
    out = live_server.wait(r.json()["output"]["task_id"])["output"]
    assert out["task_status"] == "SUCCEEDED", out
    info = probe(requests.get(out["video_url"], timeout=30).content)
    assert (info["width"], info["height"], info["frames"]) == (960, 960, 72)


def _expect_failed(live_server: LiveServer, urls: list[str], code: str) -> dict:
    r = live_server.submit(r2v_body(urls, duration=3))
    assert r.status_code == 200, r.text
    body = live_server.wait(r.json()["output"]["task_id"])
    out = body["output"]
    assert out["task_status"] == "FAILED", body
    assert out["code"] == code, out
    assert out["message"]
    assert "usage" not in body and "video_url" not in out
    return out


def test_bad_images_fail_the_task_not_the_worker(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "small.png", 300, 200)
    write_image(image_server.root / "ok.png", 640, 480)
    Image.new("RGB", (640, 480)).save(image_server.root / "anim.gif")
    (image_server.root / "page.png").write_text("<html>not an image</html>")
    whole = write_image(image_server.root / "whole.jpg", 640, 480).read_bytes()
    (image_server.root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])  # valid header, half the data
    _expect_failed(live_server, [image_server.url("small.png")], "InvalidFile.Resolution")
    _expect_failed(
        live_server, [image_server.url("ok.png"), image_server.url("anim.gif")], "InvalidFile.Format"
    )
    _expect_failed(live_server, [image_server.url("page.png")], "InvalidFile.Format")
    out = _expect_failed(
        live_server, [image_server.url("ok.png"), image_server.url("truncated.jpg")], "InvalidFile.Format"
    )
    assert "[Image 2]" in out["message"]
    _expect_failed(live_server, [image_server.url("missing.png")], "InvalidURL")
    # The same worker still serves good tasks afterwards.
    r = live_server.submit(r2v_body([image_server.url("ok.png")], duration=3))
    assert live_server.wait(r.json()["output"]["task_id"])["output"]["task_status"] == "SUCCEEDED"


def test_private_address_refused_by_default(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "ok.png", 640, 480)
    worker.fetch_policy = type(worker.fetch_policy)(allow_private=False)
    out = _expect_failed(live_server, [image_server.url("ok.png")], "InvalidURL")
    assert "127.0.0.1" in out["message"]
    assert image_server.hits == []  # the check happens before any connection


def test_timeout_and_retention(live_server: LiveServer, image_server: ImageServer) -> None:
    """An unfinished task times out (InternalError.Timeout); an expired one is purged with its video."""
    from videosynth.maintenance import run_maintenance
    from videosynth.tasks.models import TaskStatus

    write_image(image_server.root / "ok.png", 640, 480)
    stuck = live_server.submit(r2v_body([image_server.url("ok.png")], duration=3)).json()["output"]["task_id"]
    # No worker runs here: the task stays PENDING until the timeout passes.
    settings = live_server.settings.replace(task_timeout_seconds=0.5)
    time.sleep(0.6)
    report = run_maintenance(settings, live_server.store, live_server.storage)
    assert report is not None and report.timed_out == 1
    out = live_server.query(stuck)["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InternalError.Timeout")

    # A finished task with its stored video, past the retention: both go, and the id reads UNKNOWN.
    done = live_server.submit(r2v_body([image_server.url("ok.png")], duration=3)).json()["output"]["task_id"]
    from videosynth.worker.loop import Worker

    w = Worker(settings=live_server.settings, store=live_server.store, storage=live_server.storage)
    try:
        assert w.run_once()
    finally:
        w.host.close()
    task = live_server.store.get(done)
    assert task is not None and task.status is TaskStatus.SUCCEEDED and task.result_key
    assert live_server.storage.exists(task.result_key)
    video_url = live_server.query(done)["output"]["video_url"]
    time.sleep(0.3)
    report = run_maintenance(
        live_server.settings.replace(retention_seconds=0.2), live_server.store, live_server.storage
    )
    assert report is not None and task.result_key in report.purged_result_keys
    assert live_server.query(done)["output"] == {"task_id": done, "task_status": "UNKNOWN"}
    assert not live_server.storage.exists(task.result_key)
    assert requests.get(video_url, timeout=10).status_code == 404
