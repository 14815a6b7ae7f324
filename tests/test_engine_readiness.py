"""Workers claim only for engines that loaded, say why one did not, and /readyz shows it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import ImageServer, LiveServer, free_socket, write_image
from test_end_to_end import r2v_body
from videosynth.catalog import Catalog
from videosynth.wiring import build_store
from videosynth.worker.loop import Worker

TESTS = Path(__file__).resolve().parent
MODELS = """
[models."gpu-r2v"]
engine = "fake_engines:UnloadableEngine"

[models."happyhorse-1.0-r2v"]
engine = "fake_engines:SolidColorEngine"
"""


def _catalog(tmp: Path, text: str) -> Catalog:
    path = tmp / "models.toml"
    path.write_text(text, encoding="utf-8")
    return Catalog.from_file(path)


@pytest.fixture
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return _catalog(tmp_path_factory.mktemp("models"), MODELS)


def _submit(server: LiveServer, url: str, model: str) -> str:
    r = server.submit(r2v_body([url], duration=3, resolution="480P") | {"model": model})
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["task_id"])


def test_a_worker_claims_nothing_for_an_engine_that_failed_to_load(
    live_server: LiveServer, image_server: ImageServer, worker, tmp_path: Path
) -> None:
    write_image(image_server.root / "ref.png", 500, 400)
    url = image_server.url("ref.png")
    gpu_task = _submit(live_server, url, "gpu-r2v")
    other = _submit(live_server, url, "happyhorse-1.0-r2v")
    assert live_server.wait(other)["output"]["task_status"] == "SUCCEEDED"  # the worker works...
    assert live_server.query(gpu_task)["output"]["task_status"] == "PENDING"  # ...but not for that engine
    assert worker.runnable == ("happyhorse-1.0-r2v",)
    states = {e["engine"]: e for e in worker.status()["engines"]}
    broken = states["fake_engines:UnloadableEngine"]
    assert broken["state"] == "failed" and "no weights in /models/missing" in broken["detail"]
    assert broken["models"] == ["gpu-r2v"]
    # Another worker, where the weights are there, takes it.
    here = _catalog(
        tmp_path, MODELS.replace('UnloadableEngine"', 'UnloadableEngine"\nweights_missing = false')
    )
    store = build_store(live_server.settings)
    gpu_worker = Worker(settings=live_server.settings, store=store, storage=live_server.storage, catalog=here)
    stop = threading.Event()
    thread = threading.Thread(target=gpu_worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        out = live_server.wait(gpu_task)["output"]
        assert out["task_status"] == "SUCCEEDED", out
        task = live_server.store.get(gpu_task)
        assert task is not None and task.worker_id == gpu_worker.worker_id
    finally:
        stop.set()
        thread.join(60)
        store.close()


ONLY_UNLOADABLE = '[models."gpu-r2v"]\nengine = "fake_engines:UnloadableEngine"\n'


@pytest.mark.parametrize(
    ("models", "status"), [(MODELS, 200), (ONLY_UNLOADABLE, 503)], ids=["one-loads", "none-loads"]
)
def test_readyz_reports_each_workers_engines(tmp_path: Path, models: str, status: int) -> None:
    (tmp_path / "models.toml").write_text(models, encoding="utf-8")
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
        "VIDEOSYNTH_MODELS_FILE": str(tmp_path / "models.toml"),
        "VIDEOSYNTH_WORKERS": "1",
    }
    # Its log goes to a file, for the suite's secret check (conftest.py); stdout has only the banner.
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen(
            [str(Path(sys.executable).parent / "videosynth"), "serve", "--port", str(port), "--log-level", "warning"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        body: dict = {}
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                body = r.json()
                if body["workers"] and body["workers"][0]["state"] == "running":
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        assert body.get("workers") and body["workers"][0]["state"] == "running", body
        engines = {e["engine"]: e for e in body["workers"][0]["engines"]}
        assert engines["fake_engines:UnloadableEngine"]["state"] == "failed"
        assert "no weights in /models/missing" in engines["fake_engines:UnloadableEngine"]["detail"]
        # Ready while one engine loaded (the worker is useful); not ready when none did.
        assert r.status_code == status, body
        assert body["status"] == ("ready" if status == 200 else "not ready")
        if status == 200:
            assert engines["fake_engines:SolidColorEngine"]["state"] == "ready"
    finally:
        serve.terminate()
        serve.wait(60)
