"""Shared fixtures: a real uvicorn server on loopback, a real SQLite store, a real worker and engine process."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import uvicorn
from PIL import Image

from services import PostgresCluster, SeaweedS3, fresh_database
from videosynth.api.app import create_app
from videosynth.api.server import uvicorn_config
from videosynth.apikeys import display_prefix, hash_key, new_api_key
from videosynth.catalog import Catalog
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.tasks.sqlite import SqliteTaskStore
from videosynth.wiring import build_storage, build_store
from videosynth.worker.loop import Worker

SUBMIT_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_environ(
        {
            "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
            "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
            # Tests fetch reference images only from servers they start on loopback.
            "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
        }
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[SqliteTaskStore]:
    s = build_store(settings)
    s.migrate()
    yield s  # type: ignore[misc]
    s.close()


def make_key(store: SqliteTaskStore, name: str = "test") -> str:
    key = new_api_key()
    store.create_key(name, hash_key(key), display_prefix(key), int(time.time() * 1000))
    return key


@dataclass
class LiveServer:
    base_url: str
    settings: Settings
    store: SqliteTaskStore
    storage: Storage
    key: str

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/v1"

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", "X-DashScope-Async": "enable", **extra}

    def submit(self, body: dict, key: str | None = None) -> requests.Response:
        return requests.post(self.base_url + SUBMIT_PATH, json=body, headers=self.headers(key), timeout=30)

    def query(self, task_id: str, key: str | None = None) -> dict:
        r = requests.get(
            f"{self.api}/tasks/{task_id}", headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30
        )
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, task_id: str, timeout: float = 120, key: str | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.query(task_id, key)
            if body["output"]["task_status"] in ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"):
                return body
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} did not finish in {timeout} s")


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def catalog() -> Catalog:
    """The models the live server and the worker serve; a test module may override this fixture."""
    return Catalog.default("animatic")


@pytest.fixture
def live_server(settings: Settings, store: SqliteTaskStore, catalog: Catalog) -> Iterator[LiveServer]:
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = settings.replace(public_url=f"http://127.0.0.1:{port}")
    storage = build_storage(settings, store)
    app = create_app(settings=settings, store=store, storage=storage, catalog=catalog)
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield LiveServer(f"http://127.0.0.1:{port}", settings, store, storage, make_key(store))
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def worker(live_server: LiveServer, catalog: Catalog) -> Iterator[Worker]:
    """A real worker (own store connection, real engine child process) running in a thread."""
    store = build_store(live_server.settings)
    w = Worker(settings=live_server.settings, store=store, storage=live_server.storage, catalog=catalog)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
    thread.start()
    yield w
    stop.set()
    thread.join(60)
    store.close()


def write_image(
    path: Path, width: int = 640, height: int = 480, seed: int = 0, fmt: str | None = None
) -> Path:
    """A colourful test picture (gradients and blocks) so frames have real content."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            (xx * 255 // max(1, width - 1)),
            (yy * 255 // max(1, height - 1)),
            np.full_like(xx, int(rng.integers(0, 255))),
        ],
        axis=-1,
    ).astype(np.uint8)
    for _ in range(6):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        base[y : y + 40, x : x + 40] = rng.integers(0, 255, 3)
    Image.fromarray(base).save(path, format=fmt)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class ImageServer:
    root: Path
    base_url: str
    hits: list[str]

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[ImageServer]:
    """A static file server on loopback standing in for the public web."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(_QuietHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield ImageServer(root, f"http://127.0.0.1:{httpd.server_address[1]}", hits)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    return fresh_database(pg_cluster)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    server = SeaweedS3()
    server.start()
    yield server
    server.stop()
