"""The seed request through each kind of client users point at us, end to end on loopback.

Each client submits the seed of ``examples/seed.sh`` (three reference images, the Chinese prompt), polls
until SUCCEEDED and downloads the MP4 itself where it can. Java's default HttpClient and
``curl --http2`` offer an h2c upgrade with the POST; they are here because that once lost the body.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import dashscope
import pytest
import requests
from dashscope import VideoSynthesis

from conftest import SUBMIT_PATH, ImageServer, LiveServer, write_image
from videosynth.api.server import UpgradeDecliningHttpToolsProtocol

CLIENTS = Path(__file__).parent / "clients"
MODEL = "happyhorse-1.1-r2v"
PROMPT = (
    "[Image 1]中身着红色旗袍的女性站在老上海的街头，[Image 2]中的折扇在她手中缓缓打开，"
    "[Image 3]中的流苏耳坠随着她转头轻轻摇晃。"
)
IMAGES = ("girl.jpg", "fan.png", "earrings.webp")
DURATION = 3  # the shortest the model allows, to keep the matrix fast
PARAMETERS: dict[str, Any] = {
    "resolution": "720P",
    "ratio": "16:9",
    "duration": DURATION,
    "watermark": True,
    "seed": 20260622,
}
WIDTH, HEIGHT, FPS = 1280, 720, 24
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
PROCESS_TIMEOUT_S = 120


@dataclass
class Seed:
    media: list[dict[str, str]]
    image_hits: list[str]

    def body(self) -> dict[str, Any]:
        return {"model": MODEL, "input": {"prompt": PROMPT, "media": self.media}, "parameters": PARAMETERS}

    def body_file(self, directory: Path) -> Path:
        path = directory / "seed.json"
        path.write_text(json.dumps(self.body(), ensure_ascii=False), encoding="utf-8")
        return path


@dataclass
class Outcome:
    """What a client reported at the end; the MP4 is the one it downloaded."""

    task_id: str
    status: str
    video_url: str
    mp4: Path


@pytest.fixture
def seed(image_server: ImageServer) -> Seed:
    for i, name in enumerate(IMAGES):
        write_image(image_server.root / name, 640, 480, seed=i)
    return Seed(
        [{"type": "reference_image", "url": image_server.url(name)} for name in IMAGES], image_server.hits
    )


Offers = list[tuple[str, bytes]]


@pytest.fixture
def h2c_offers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Offers]:
    """(method, Upgrade value) of each upgrade offer the server declined, to prove a client made one."""
    seen: Offers = []
    original = UpgradeDecliningHttpToolsProtocol._head_without_offer

    def spy(self: UpgradeDecliningHttpToolsProtocol) -> bytes:
        seen.append((self.parser.get_method().decode(), dict(self.headers).get(b"upgrade", b"")))
        return original(self)

    monkeypatch.setattr(UpgradeDecliningHttpToolsProtocol, "_head_without_offer", spy)
    yield seen


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing; `make system-deps` installs it"
    return path


def run_client(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, check=False)
    assert proc.returncode == 0, (
        f"{argv[0]} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc.stdout


def outcome_from_query(body: dict[str, Any], mp4: Path) -> Outcome:
    output = body["output"]
    return Outcome(output["task_id"], output["task_status"], output.get("video_url", ""), mp4)


def check(server: LiveServer, seed: Seed, outcome: Outcome) -> None:
    assert outcome.status == "SUCCEEDED", outcome
    assert outcome.video_url.startswith(server.base_url + "/")
    # What the server stored is what the client meant to send, the Chinese prompt included.
    task = server.store.get(outcome.task_id)
    assert task is not None
    assert task.model == MODEL and task.prompt == PROMPT
    assert sorted(seed.image_hits) == sorted(f"/{name}" for name in IMAGES)
    params = task.params
    assert (params.resolution, params.ratio, params.duration) == ("720P", "16:9", DURATION)
    assert (params.watermark, params.seed) == (PARAMETERS["watermark"], PARAMETERS["seed"])
    body = server.query(outcome.task_id)
    assert body["usage"]["duration"] == DURATION and body["usage"]["SR"] == 720, body
    check_mp4(outcome.mp4)


def check_mp4(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    with av.open(str(path)) as container:
        assert "mp4" in container.format.name.split(",")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = 0
        for frame in container.decode(stream):
            assert (frame.width, frame.height) == (WIDTH, HEIGHT)
            frames += 1
    assert frames == DURATION * FPS


# One helper per client. Each returns what that client saw at the end.


def via_curl(server: LiveServer, seed: Seed, out: Path, *options: str) -> Outcome:
    """The seed's curl commands (examples/seed.sh), with extra options such as --http2."""
    curl = [tool("curl"), "-sS", *options]
    auth = f"Authorization: Bearer {server.key}"
    submitted = run_client(
        *curl, server.api + "/services/aigc/video-generation/video-synthesis",
        "-H", auth, "-H", "X-DashScope-Async: enable", "-H", "Content-Type: application/json",
        "-d", json.dumps(seed.body(), ensure_ascii=False),
    )  # fmt: skip
    assert '"PENDING"' in submitted, submitted
    task_id = json.loads(submitted)["output"]["task_id"]
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while True:
        body = json.loads(run_client(*curl, f"{server.api}/tasks/{task_id}", "-H", auth))
        if body["output"]["task_status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    if body["output"]["task_status"] == "SUCCEEDED":
        run_client(*curl, "--fail", "-o", str(out), body["output"]["video_url"])
    return outcome_from_query(body, out)


def via_requests(server: LiveServer, seed: Seed, out: Path) -> Outcome:
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {server.key}"
        r = http.post(
            server.base_url + SUBMIT_PATH,
            json=seed.body(),
            headers={"X-DashScope-Async": "enable"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        task_id = r.json()["output"]["task_id"]
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while True:
            r = http.get(f"{server.api}/tasks/{task_id}", timeout=30)
            assert r.status_code == 200, r.text
            body = r.json()
            if body["output"]["task_status"] in TERMINAL:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        if body["output"]["task_status"] == "SUCCEEDED":
            video = http.get(body["output"]["video_url"], timeout=30)
            assert video.status_code == 200
            out.write_bytes(video.content)
    return outcome_from_query(body, out)


def via_node_fetch(server: LiveServer, seed: Seed, out: Path) -> Outcome:
    stdout = run_client(
        tool("node"),
        str(CLIENTS / "video_client.mjs"),
        server.api,
        server.key,
        str(seed.body_file(out.parent)),
        str(out),
    )
    return outcome_from_query(json.loads(stdout), out)


def via_java_http_client(server: LiveServer, seed: Seed, out: Path) -> Outcome:
    stdout = run_client(
        tool("java"),
        str(CLIENTS / "VideoClient.java"),
        server.api,
        server.key,
        str(seed.body_file(out.parent)),
        str(out),
    )
    return outcome_from_query(json.loads(stdout), out)


def via_sdk_v1(server: LiveServer, seed: Seed, out: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    monkeypatch.setattr(dashscope, "base_http_api_url", server.api)
    rsp = VideoSynthesis.async_call(
        api_key=server.key, model=MODEL, prompt=PROMPT, media=seed.media, **PARAMETERS
    )
    assert rsp.status_code == 200, rsp
    result = VideoSynthesis.wait(rsp, api_key=server.key)
    assert result.status_code == 200, result
    if result.output.task_status == "SUCCEEDED":
        out.write_bytes(requests.get(result.output.video_url, timeout=30).content)
    return Outcome(result.output.task_id, result.output.task_status, result.output.video_url, out)


def via_sdk_v2(server: LiveServer, seed: Seed, out: Path) -> Outcome:
    client = dashscope.Client(api_key=server.key, base_url=server.api)
    job = client.videos.jobs.create(model=MODEL, prompt=PROMPT, media=seed.media, **PARAMETERS)
    done = client.videos.jobs.wait(job, poll_interval=0.2, max_interval=0.5, timeout=PROCESS_TIMEOUT_S)
    if done.status == "SUCCEEDED" and done.video_url:
        out.write_bytes(requests.get(done.video_url, timeout=30).content)
    return Outcome(done.task_id, done.status, done.video_url or "", out)


# The matrix: one live server and worker per client.


def test_curl(
    live_server: LiveServer, worker: object, seed: Seed, tmp_path: Path, h2c_offers: Offers
) -> None:
    check(live_server, seed, via_curl(live_server, seed, tmp_path / "out.mp4"))
    assert h2c_offers == []


def test_curl_http2(
    live_server: LiveServer, worker: object, seed: Seed, tmp_path: Path, h2c_offers: Offers
) -> None:
    check(live_server, seed, via_curl(live_server, seed, tmp_path / "out.mp4", "--http2"))
    assert ("POST", b"h2c") in h2c_offers and ("GET", b"h2c") in h2c_offers, h2c_offers


def test_requests(live_server: LiveServer, worker: object, seed: Seed, tmp_path: Path) -> None:
    check(live_server, seed, via_requests(live_server, seed, tmp_path / "out.mp4"))


def test_node_fetch(
    live_server: LiveServer, worker: object, seed: Seed, tmp_path: Path, h2c_offers: Offers
) -> None:
    check(live_server, seed, via_node_fetch(live_server, seed, tmp_path / "out.mp4"))
    assert h2c_offers == []


def test_java_http_client(
    live_server: LiveServer, worker: object, seed: Seed, tmp_path: Path, h2c_offers: Offers
) -> None:
    check(live_server, seed, via_java_http_client(live_server, seed, tmp_path / "out.mp4"))
    assert ("POST", b"h2c") in h2c_offers, h2c_offers


def test_dashscope_sdk_v1(
    live_server: LiveServer, worker: object, seed: Seed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check(live_server, seed, via_sdk_v1(live_server, seed, tmp_path / "out.mp4", monkeypatch))


def test_dashscope_sdk_v2(live_server: LiveServer, worker: object, seed: Seed, tmp_path: Path) -> None:
    check(live_server, seed, via_sdk_v2(live_server, seed, tmp_path / "out.mp4"))
