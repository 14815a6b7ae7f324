"""The wan-vace engine end to end: `videosynth serve` and a standalone `videosynth worker`, real processes,
a tiny random Wan VACE pipeline saved as real weights are, routed by a models file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import requests

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from conftest import ImageServer, LiveServer, free_socket, make_key, write_image
from videosynth.settings import Settings
from videosynth.wiring import build_storage, build_store
from wan_tiny import save_pipeline

TESTS = Path(__file__).resolve().parent
SEED_PROMPT = (
    "[Image 1]中身着红色旗袍的女性站在老上海的街头，[Image 2]中的折扇在她手中缓缓打开，"
    "[Image 3]中的流苏耳坠随着她转头轻轻摇晃。"
)
# happyhorse-1.1-r2v denoises for a few seconds (enough steps that a poller sees it move); the others are
# quick. cpu_threads = 1: two cores, and the API, the encoder and the tests share them.
COMMON = 'device = "cpu"\ndtype = "float32"\ncpu_threads = 1\n'
MODELS = """
[models."happyhorse-1.1-r2v"]
engine = "wan-vace"
model_dir = "{weights}"
max_area = 9216
steps = 80
{common}
[models."wan-quick"]
engine = "wan-vace"
model_dir = "{weights}"
max_area = 512
steps = 2
{common}
[models."wan-oom"]
engine = "wan_faults:OutOfMemoryOnce"
model_dir = "{weights}"
max_area = 512
steps = 3
{common}"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("wan-e2e") / "Wan-tiny-diffusers")


class Deployment:
    """`videosynth serve` (with its embedded worker, or none) and optional standalone workers."""

    def __init__(self, tmp: Path, weights: Path) -> None:
        (tmp / "models.toml").write_text(MODELS.format(weights=weights, common=COMMON), encoding="utf-8")
        self.tmp = tmp
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite'}",
            "VIDEOSYNTH_STORAGE_URL": f"file://{tmp / 'storage'}",
            "VIDEOSYNTH_WORK_DIR": str(tmp / "work"),
            "VIDEOSYNTH_MODELS_FILE": str(tmp / "models.toml"),
            "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
            "OMP_NUM_THREADS": "1",
        }
        self.settings = Settings.from_environ(self.env)
        self.store = build_store(self.settings)
        self.store.migrate()
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *args: str) -> None:
        log = open(self.tmp / f"{args[0]}-{len(self.procs)}.log", "wb")  # noqa: SIM115 - the child owns it
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "videosynth", *args], env=self.env, stdout=log, stderr=log
            )
        )

    def serve(self, workers: int) -> LiveServer:
        sock = free_socket()
        port = sock.getsockname()[1]
        sock.close()
        self.env["VIDEOSYNTH_WORKERS"] = str(workers)
        self.spawn("serve", "--port", str(port), "--log-level", "warning")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"serve did not start: {self.logs()}")
        key = make_key(self.store)  # type: ignore[arg-type]
        return LiveServer(base, self.settings, self.store, build_storage(self.settings, self.store), key)  # type: ignore[arg-type]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.tmp.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.store.close()


@pytest.fixture
def deployment(tmp_path: Path, weights: Path) -> Iterator[Deployment]:
    dep = Deployment(tmp_path, weights)
    yield dep
    dep.stop()


def _urls(image_server: ImageServer, count: int) -> list[str]:
    urls = []
    for i in range(count):
        fmt, ext = [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")][i % 3]
        write_image(image_server.root / f"ref{i}.{ext}", 640 + 40 * i, 480, seed=i, fmt=fmt)
        urls.append(image_server.url(f"ref{i}.{ext}"))
    return urls


def _body(
    urls: list[str], model: str = "happyhorse-1.1-r2v", prompt: str = SEED_PROMPT, **params: object
) -> dict:
    return {
        "model": model,
        "input": {"prompt": prompt, "media": [{"type": "reference_image", "url": u} for u in urls]},
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5, "watermark": True, **params},
    }


def _submit(server: LiveServer, body: dict) -> str:
    r = server.submit(body)
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["task_id"])


def _frames(server: LiveServer, out: dict, tmp: Path) -> tuple[list[np.ndarray], float, float]:
    """The MP4's decoded frames, its frame rate and its duration in seconds."""
    path = tmp / f"{time.monotonic_ns()}.mp4"
    path.write_bytes(requests.get(out["video_url"], timeout=60).content)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return frames, rate, duration


def _poll(server: LiveServer, task_id: str, until: set[str], timeout: float = 180) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = server.query(task_id)["output"]
        seen.append(out)
        if out["task_status"] in until or out.get("stage") in until:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{task_id} never reached {until}: {seen[-1]}")


def test_serve_runs_the_seed_request_on_wan_vace_with_progress_cancel_and_out_of_memory(
    deployment: Deployment, image_server: ImageServer, tmp_path: Path
) -> None:
    server = deployment.serve(workers=1)
    urls = _urls(image_server, 3)
    task_id = _submit(server, _body(urls))
    seen = _poll(server, task_id, {"SUCCEEDED", "FAILED"})
    out = seen[-1]
    assert out["task_status"] == "SUCCEEDED", (out, deployment.logs())
    frames, rate, duration = _frames(server, out, tmp_path)
    assert len(frames) == 5 * 24 and frames[0].shape == (720, 1280, 3)
    assert rate == 24 and duration == pytest.approx(5.0, abs=1e-3)
    denoising = [o["progress"] for o in seen if o.get("stage") == "denoising"]
    assert len(set(denoising)) >= 2 and denoising == sorted(denoising), [
        (o.get("stage"), o["progress"]) for o in seen
    ]
    assert {"encoding_prompt", "denoising"} <= {o.get("stage") for o in seen}
    percents = [o["progress"] for o in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    # Cancel while it denoises: the task ends CANCELED, promptly (the engine stops within a step).
    task_id = _submit(server, _body(urls))
    _poll(server, task_id, {"denoising"})
    r = requests.post(f"{server.api}/tasks/{task_id}/cancel", headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert server.wait(task_id, timeout=60)["output"]["task_status"] == "CANCELED"
    # Out of GPU memory: a clear failure, and the same engine process runs the next task.
    task_id = _submit(server, _body(urls[:1], model="wan-oom", prompt="[Image 1] walks.", duration=3))
    out = server.wait(task_id, timeout=120)["output"]
    assert out["task_status"] == "FAILED", out
    assert out["code"] == "InternalError.Algo" and "ran out of memory" in out["message"], out
    task_id = _submit(server, _body(urls[:1], model="wan-oom", prompt="[Image 1] walks.", duration=3))
    assert server.wait(task_id, timeout=120)["output"]["task_status"] == "SUCCEEDED"


CHAINED: dict[str, object] = {"duration": 12, "resolution": "480P", "ratio": "1:1"}


def test_a_standalone_worker_runs_nine_references_chained_segments_and_repeats_a_seed(
    deployment: Deployment, image_server: ImageServer, tmp_path: Path
) -> None:
    server = deployment.serve(workers=0)
    deployment.spawn("worker")
    urls = _urls(image_server, 9)
    nine = " ".join(f"[Image {i}] walks." for i in range(1, 10))
    ids = {
        "nine": _submit(server, _body(urls, "wan-quick", nine, duration=3, ratio="9:16", watermark=False)),
        "seed": _submit(server, _body(urls[:3], seed=42)),  # the seed request, on happyhorse-1.1-r2v
        "again": _submit(server, _body(urls[:3], seed=42)),
        "chained": _submit(server, _body(urls[:2], "wan-quick", "[Image 1] and [Image 2].", **CHAINED)),
    }  # fmt: skip
    results = {}
    for name, task_id in ids.items():
        out = server.wait(task_id, timeout=240)["output"]
        assert out["task_status"] == "SUCCEEDED", (name, out, deployment.logs())
        results[name] = _frames(server, out, tmp_path)
    frames, rate, duration = results["nine"]
    assert len(frames) == 72 and frames[0].shape == (1280, 720, 3) and rate == 24
    frames, rate, duration = results["chained"]
    assert len(frames) == 12 * 24 and frames[0].shape == (624, 624, 3)
    assert duration == pytest.approx(12.0, abs=1e-3)
    seed, rate, duration = results["seed"]
    assert len(seed) == 120 and seed[0].shape == (720, 1280, 3)
    assert rate == 24 and duration == pytest.approx(5.0, abs=1e-3)
    again = results["again"][0]
    assert all(np.array_equal(a, b) for a, b in zip(seed, again, strict=True))
