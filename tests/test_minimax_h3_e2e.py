"""The minimax-h3 engine end to end: `videosynth serve` and a standalone `videosynth worker`, real processes, a
tiny random MiniMax-H3 ref2va pipeline saved as real weights are, routed by a models file; the MP4 carries
the model's stereo sound as AAC, as long as the video."""

from __future__ import annotations

from pathlib import Path

import av
import dashscope
import pytest
import requests
from dashscope import VideoSynthesis

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from conftest import ImageServer, LiveServer
from minimax_tiny import build_tiny_pipeline
from test_wan_vace_e2e import Deployment, _body, _poll, _submit, _urls

# A small canvas keeps CPU denoising to seconds; the worker still writes the table's exact size. The seed
# model denoises for a few seconds (enough steps that a poller sees progress move); the other is quick.
COMMON = 'device = "cpu"\ndtype = "float32"\ncpu_threads = 1\nmax_area = 2048\n'
MODELS = """
[models."happyhorse-1.1-r2v"]
engine = "minimax-h3"
model_dir = "{weights}"
steps = 250
{common}
[models."h3-quick"]
engine = "minimax-h3"
model_dir = "{weights}"
steps = 3
{common}"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("h3-e2e") / "MiniMax-H3-tiny")


@pytest.fixture
def deployment(tmp_path: Path, weights: Path) -> Deployment:
    dep = Deployment(tmp_path, weights)
    (tmp_path / "models.toml").write_text(MODELS.format(weights=weights, common=COMMON), encoding="utf-8")
    yield dep  # type: ignore[misc]
    dep.stop()


def _media(server: LiveServer, out: dict, tmp: Path) -> dict:
    path = tmp / f"{out['task_id']}.mp4"
    path.write_bytes(requests.get(out["video_url"], timeout=60).content)
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        return {
            "frames": frames,
            "size": (video.codec_context.width, video.codec_context.height),
            "fps": float(video.average_rate),
            "video_s": float(video.duration * video.time_base),
            "audio_s": float(audio.duration * audio.time_base),
            "audio_codec": audio.codec_context.name,
            "channels": audio.codec_context.channels,
            "rate": audio.rate,
        }


def _check(media: dict, size: tuple[int, int], seconds: int) -> None:
    assert media["size"] == size and media["frames"][0].shape == (size[1], size[0], 3)
    assert len(media["frames"]) == seconds * 24 and media["fps"] == 24
    assert media["video_s"] == pytest.approx(seconds, abs=1e-3)
    assert (media["audio_codec"], media["channels"], media["rate"]) == ("aac", 2, 32000)
    assert abs(media["audio_s"] - media["video_s"]) <= 1 / 24


def test_serve_runs_the_seed_request_with_sound_progress_and_cancel(
    deployment: Deployment, image_server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = deployment.serve(workers=1)
    models = requests.get(f"{server.api}/models", timeout=30).json()["data"]
    assert {m["model"]: m["audio"] for m in models}["happyhorse-1.1-r2v"] is True
    urls = _urls(image_server, 3)
    task_id = _submit(server, _body(urls))
    seen = _poll(server, task_id, {"SUCCEEDED", "FAILED"})
    out = seen[-1]
    assert out["task_status"] == "SUCCEEDED", (out, deployment.logs())
    _check(_media(server, out, tmp_path), (1280, 720), 5)
    denoising = [o["progress"] for o in seen if o.get("stage") == "denoising"]
    assert len(set(denoising)) >= 2 and denoising == sorted(denoising), [
        (o.get("stage"), o["progress"]) for o in seen
    ]
    percents = [o["progress"] for o in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    # The SDK's own wait returns the video.
    monkeypatch.setattr(dashscope, "base_http_api_url", server.api)
    rsp = VideoSynthesis.async_call(
        api_key=server.key,
        model="h3-quick",
        prompt="[Image 1] hands [Image 2] a fan.",
        media=[{"type": "reference_image", "url": u} for u in urls[:2]],
        resolution="480P",
        ratio="9:16",
        duration=3,
        watermark=False,
    )
    assert rsp.status_code == 200, rsp
    result = VideoSynthesis.wait(rsp, api_key=server.key)
    assert result.output.task_status == "SUCCEEDED", result
    _check(_media(server, {"task_id": "sdk", "video_url": result.output.video_url}, tmp_path), (480, 832), 3)
    # Cancel while it denoises: CANCELED within a step.
    task_id = _submit(server, _body(urls))
    _poll(server, task_id, {"denoising"})
    r = requests.post(f"{server.api}/tasks/{task_id}/cancel", headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert server.wait(task_id, timeout=60)["output"]["task_status"] == "CANCELED"


def test_a_standalone_worker_runs_nine_references_and_three_to_fifteen_seconds(
    deployment: Deployment, image_server: ImageServer, tmp_path: Path
) -> None:
    server = deployment.serve(workers=0)
    deployment.spawn("worker")
    urls = _urls(image_server, 9)
    nine = " ".join(f"[Image {i}] waves." for i in range(1, 10))
    two = "[Image 1] and [Image 2] sing."
    ids = {
        "nine": _submit(server, _body(urls, "h3-quick", nine, duration=3, ratio="1:1", resolution="480P")),
        "fifteen": _submit(server, _body(urls[:2], "h3-quick", two, duration=15, resolution="480P")),
    }
    for name, task_id in ids.items():
        out = server.wait(task_id, timeout=300)["output"]
        assert out["task_status"] == "SUCCEEDED", (name, out, deployment.logs())
        media = _media(server, out, tmp_path)
        if name == "nine":
            _check(media, (624, 624), 3)
        else:
            _check(media, (832, 480), 15)
