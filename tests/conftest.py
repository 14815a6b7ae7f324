"""Shared fixtures: a real uvicorn server on loopback, a real SQLite store, a real worker and engine process."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

# The per-client limits (5 submits/s, 20 queries/s, 500 queued) would throttle tests that drive a server as
# fast as it goes. Off here and in every server the tests start (they inherit the environment); the limit
# tests switch them on for their own keys and servers.
LIMITS_OFF = {
    "VIDEOSYNTH_SUBMIT_RPS": "0",
    "VIDEOSYNTH_QUERY_RPS": "0",
    "VIDEOSYNTH_MAX_QUEUED": "0",
    "VIDEOSYNTH_MAX_STORED_MB": "0",
}
for _name, _value in LIMITS_OFF.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_environ(
        {
            "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
            "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
            # Tests fetch reference images only from servers they start on loopback.
            "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
            **LIMITS_OFF,
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


@contextmanager
def serving(app: object, sock: socket.socket | None = None) -> Iterator[str]:
    """``app`` under a real uvicorn on loopback (on ``sock`` if given), in a thread; yields its base URL."""
    sock = sock or free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stopping = getattr(getattr(app, "state", None), "stopping", None)
        if stopping is not None:
            stopping.set()  # open event streams end, as `serve` ends them
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def live_server(settings: Settings, store: SqliteTaskStore, catalog: Catalog) -> Iterator[LiveServer]:
    sock = free_socket()
    settings = settings.replace(public_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    storage = build_storage(settings, store)
    app = create_app(settings=settings, store=store, storage=storage, catalog=catalog)
    with serving(app, sock) as base_url:
        yield LiveServer(base_url, settings, store, storage, make_key(store))


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


# === Suite-wide secret check ==============================================================================
# No secret may appear in any log the suite produces. Collected during the session:
# - every log record of this process, written through the servers' own JSON formatter (which redacts: this
#   checks that its redaction is complete) to <session temp dir>/suite-logs/in-process.log;
# - the output of every server the tests start as a subprocess: the helpers write it to *.log files under
#   their test's tmp_path, which lies in the same session temp dir (tests/relay_env.py, test_scale.py,
#   test_faults.py, test_cli.py, ...); a new helper must do the same for its output to be checked;
# - the API keys minted in this process (videosynth.apikeys.new_api_key is wrapped to remember them).
# At the end of the session every *.log file there is searched for a minted key or any other full key, a
# "Bearer <token>", a URL signature's value, or a data: URL's base64 payload; one found fails the session and
# its lines are printed. The one line allowed to show a key is the banner `videosynth serve` prints on stdout
# for the operator ("  API key: sk-..."), which is not a log record.

_MINTED_KEYS: set[str] = set()
_SUITE_LOGS: list[Path] = []  # the session temp dir, once a test has run


def _remember_minted_keys() -> None:
    import videosynth.apikeys

    original = videosynth.apikeys.new_api_key

    def new_api_key_remembered() -> str:
        key = original()
        _MINTED_KEYS.add(key)
        return key

    videosynth.apikeys.new_api_key = new_api_key_remembered  # the modules imported from now on
    globals()["new_api_key"] = new_api_key_remembered  # make_key above


_remember_minted_keys()


@pytest.fixture(scope="session", autouse=True)
def _suite_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import logging

    from videosynth.observability.logs import JsonFormatter

    base = tmp_path_factory.getbasetemp()
    (base / "suite-logs").mkdir(exist_ok=True)
    handler = logging.FileHandler(base / "suite-logs" / "in-process.log", encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    _SUITE_LOGS.append(base)
    yield
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()


_SECRET_PATTERNS = (
    ("an API key", r"\bsk-[0-9a-f]{48}\b"),
    ("a webhook secret", r"\bwhsec_(?!\*\*\*)[A-Za-z0-9+/=]{16,}"),
    ("a bearer token", r"(?i)\bbearer\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}"),
    ("a URL signature", r"(?i)\b(?:x-amz-signature|signature)=(?!\*\*\*)[^&\s\"'#<>]+"),
    ("a data: URL payload", r";base64,[A-Za-z0-9+/=]{40,}"),
)
_BANNER_KEY = r"^\s*API key: sk-[0-9a-f]{48}\s*$"


def find_secrets(
    lines: Iterator[str] | list[str], minted: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """What in ``lines`` is a secret: ``"<what>: <line>"`` for each line that shows one."""
    import re

    patterns = [(what, re.compile(pattern)) for what, pattern in _SECRET_PATTERNS]
    banner = re.compile(_BANNER_KEY)
    found = []
    for line in lines:
        if banner.match(line):
            continue
        for what, pattern in patterns:
            match = pattern.search(line)
            if match:
                if what == "an API key" and match.group(0) in minted:
                    what = "an API key minted by the suite"
                found.append(f"{what}: {line.strip()[:300]}")
                break
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _SUITE_LOGS:
        return
    found = []
    for path in sorted(_SUITE_LOGS[0].rglob("*.log")):
        with path.open(encoding="utf-8", errors="replace") as f:
            found += [f"{path}: {hit}" for hit in find_secrets(f, frozenset(_MINTED_KEYS))]
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"SECRETS IN LOGS: {len(found)} line(s) show a secret (see tests/conftest.py)"]
        lines += ["  " + hit for hit in found[:50]]
        if reporter is not None:
            reporter.write_line("")  # ends the progress line
        for line in lines:
            if reporter is not None:
                reporter.write_line(line, red=True)
            else:
                print(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# === End of the suite-wide secret check ===================================================================


# Debian's Chromium for the browser tests (the web console, /docs); `make test` installs it.
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DESKTOP_WIDTH, DESKTOP_HEIGHT = 1360, 1000
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-default-apps",
    "--disable-extensions",
    "--lang=en-US",
)


@pytest.fixture
def chromium(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path / "chromium-profile"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={DESKTOP_WIDTH},{DESKTOP_HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        # The profile holds the tab's sessionStorage (the API key) in LevelDB files named *.log, which the
        # suite's secret check would rightly find.
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def browser_errors(driver: Any) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
