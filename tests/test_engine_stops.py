"""Hard stops: an engine that ignores a cancel is killed and replaced; one that dies fails only its task."""

from __future__ import annotations

import time

import pytest
import requests

from conftest import ImageServer, LiveServer, write_image
from test_end_to_end import r2v_body
from videosynth.catalog import Catalog
from videosynth.settings import Settings

MODELS = """
[models."stuck-r2v"]
engine = "fake_engines:HangingEngine"

[models."crash-r2v"]
engine = "fake_engines:CrashingEngine"

[models."happyhorse-1.0-r2v"]
engine = "fake_engines:SolidColorEngine"

[models."slow-frames-r2v"]
engine = "fake_engines:OddFrameEngine"
frame_seconds = 0.2
"""
STOP_DEADLINE_S = 2.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(engine_stop_seconds=STOP_DEADLINE_S)


@pytest.fixture
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path = tmp_path_factory.mktemp("models") / "models.toml"
    path.write_text(MODELS, encoding="utf-8")
    return Catalog.from_file(path)


def _submit(server: LiveServer, url: str, model: str) -> str:
    r = server.submit(r2v_body([url], duration=3, resolution="480P") | {"model": model})
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["task_id"])


def _wait_status(server: LiveServer, task_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = server.query(task_id)["output"]
        if out["task_status"] == status:
            return dict(out)
        time.sleep(0.05)
    raise AssertionError(f"{task_id} never reached {status}: {out}")


def test_an_engine_that_ignores_a_cancel_is_killed_and_replaced(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "ref.png", 500, 400)
    url = image_server.url("ref.png")
    stuck = _submit(live_server, url, "stuck-r2v")
    _wait_status(live_server, stuck, "RUNNING")
    engine_pid = worker.host._proc.pid
    r = requests.post(f"{live_server.api}/tasks/{stuck}/cancel", headers=live_server.headers(), timeout=10)
    assert r.status_code == 200, r.text
    out = live_server.wait(stuck)["output"]
    assert out["task_status"] == "CANCELED", out
    assert worker.host._proc.pid != engine_pid  # a fresh engine process
    after = _submit(live_server, url, "happyhorse-1.0-r2v")
    assert live_server.wait(after)["output"]["task_status"] == "SUCCEEDED"


def test_an_engine_process_that_dies_fails_its_task_and_the_next_one_runs(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "ref.png", 500, 400)
    url = image_server.url("ref.png")
    crashed = live_server.wait(_submit(live_server, url, "crash-r2v"))["output"]
    assert crashed["task_status"] == "FAILED", crashed
    assert crashed["code"] == "InternalError.Algo"
    assert "killed by SIGKILL" in crashed["message"], crashed
    after = _submit(live_server, url, "happyhorse-1.0-r2v")
    assert live_server.wait(after)["output"]["task_status"] == "SUCCEEDED"


def test_a_frame_engine_stops_at_its_next_frame_without_being_killed(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "ref.png", 500, 400)
    url = image_server.url("ref.png")
    slow = _submit(live_server, url, "slow-frames-r2v")  # 72 frames of 0.2 s each
    _wait_status(live_server, slow, "RUNNING")
    engine_pid = worker.host._proc.pid
    r = requests.post(f"{live_server.api}/tasks/{slow}/cancel", headers=live_server.headers(), timeout=10)
    assert r.status_code == 200, r.text
    assert live_server.wait(slow)["output"]["task_status"] == "CANCELED"
    # The same engine process: the cancel reached the worker's encode loop, no kill was needed.
    assert worker.host._proc.pid == engine_pid
    after = _submit(live_server, url, "happyhorse-1.0-r2v")
    assert live_server.wait(after)["output"]["task_status"] == "SUCCEEDED"
