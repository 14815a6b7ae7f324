"""Two real videosynth deployments on loopback for the relay tests: B (the animatic engine) is the upstream
of A (the dashscope relay engine), optionally through a proxy that can make B answer 500 or 429."""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from conftest import ImageServer, LiveServer, free_socket, make_key
from videosynth.settings import Settings
from videosynth.wiring import build_storage, build_store

TESTS = Path(__file__).resolve().parent
UPSTREAM_KEY_ENV = "VIDEOSYNTH_TEST_UPSTREAM_KEY"


def free_port() -> int:
    sock = free_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


class Node:
    """One deployment: a database, a storage directory, `videosynth serve` and standalone workers, all
    real processes; restartable on the same port with the same data."""

    def __init__(self, root: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{self.root / 'db.sqlite'}",
            "VIDEOSYNTH_STORAGE_URL": f"file://{self.root / 'storage'}",
            "VIDEOSYNTH_WORK_DIR": str(self.root / "work"),
            "VIDEOSYNTH_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
            "OMP_NUM_THREADS": "1",
            **(env or {}),
        }
        self.settings = Settings.from_environ(self.env)
        self.store = build_store(self.settings)
        self.store.migrate()
        self.storage = build_storage(self.settings, self.store)
        self.key = make_key(self.store)  # type: ignore[arg-type]
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def live(self) -> LiveServer:
        return LiveServer(self.base_url, self.settings, self.store, self.storage, self.key)  # type: ignore[arg-type]

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        self._logs += 1
        log = open(self.root / f"{args[0]}-{self._logs}.log", "wb")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            [sys.executable, "-m", "videosynth", *args], env=self.env, stdout=log, stderr=log
        )

    def serve(self, workers: int) -> None:
        self.env["VIDEOSYNTH_WORKERS"] = str(workers)
        self.server = self._spawn("serve", "--port", str(self.port), "--log-level", "warning")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name} did not start: {self.logs()}")

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.kill()
        self.server.wait()
        self.server = None

    def worker(self) -> subprocess.Popen[bytes]:
        proc = self._spawn("worker")
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-4000:] for p in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        procs = [p for p in [self.server, *self.workers] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.store.close()


class FaultProxy:
    """A loopback HTTP proxy in front of B. ``mode``: "pass" forwards; "500" and "429" answer so without
        forwarding (429 with Retry-After: 1); "lose-submit" forwards a submit but drops the connection instead
        of answering (the answer lost on the way back), once, then passes; "drop-submit" drops a submit's
    connection without forwarding it, once. Counts what it saw."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.seen: dict[str, int] = {}
        self.submits_forwarded = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    mode = proxy.mode
                    proxy.seen[mode] = proxy.seen.get(mode, 0) + 1
                if mode in ("500", "429"):
                    payload = (
                        b'{"request_id":"x","code":"Throttling","message":"Requests rate limit exceeded."}'
                        if mode == "429"
                        else b'{"request_id":"x","code":"InternalError","message":"boom"}'
                    )
                    self.send_response(int(mode))
                    if mode == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                is_submit = self.command == "POST" and "video-synthesis" in self.path
                if mode in ("lose-submit", "drop-submit") and not is_submit:
                    mode = "pass"
                if mode == "drop-submit":
                    proxy.mode = "pass"
                    self.close_connection = True
                    self.connection.shutdown(2)  # the submit never reaches B
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if is_submit and response.status == 200:
                    with proxy._lock:
                        proxy.submits_forwarded += 1
                if mode == "lose-submit":
                    proxy.mode = "pass"
                    self.close_connection = True
                    self.connection.shutdown(2)  # B created the task; its answer never reaches A
                    conn.close()
                    return
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_DELETE = _relay

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


RELAY_COMMON = """engine = "dashscope"
api_key_env = "{key_env}"
model = "happyhorse-1.1-r2v"
poll_first_s = 0.2
poll_max_s = 0.5
give_up_after_s = {give_up}
result_hosts = "127.0.0.1"
list_timezone = "UTC"
clock_skew_s = 0.2
"""


def relay_models_file(path: Path, b_port: int, proxy_port: int, give_up: float = 60.0) -> Path:
    """A's models: happyhorse-1.1-r2v through the fault proxy, happyhorse-1.0-r2v straight to B (mapped
    to B's happyhorse-1.1-r2v), relay-upload straight to B with every held reference uploaded."""
    common = RELAY_COMMON.format(key_env=UPSTREAM_KEY_ENV, give_up=give_up)
    path.write_text(
        f'[models."happyhorse-1.1-r2v"]\nbase_url = "http://127.0.0.1:{proxy_port}/api/v1"\n{common}\n'
        f'[models."happyhorse-1.0-r2v"]\nbase_url = "http://127.0.0.1:{b_port}/api/v1"\n{common}\n'
        f'[models."relay-upload"]\nbase_url = "http://127.0.0.1:{b_port}/api/v1"\ninline_max_mb = 0.0\n{common}',
        encoding="utf-8",
    )
    return path


def start_image_server(root: Path) -> tuple[ImageServer, http.server.ThreadingHTTPServer]:
    """A static file server on loopback standing in for the public web, for a whole module."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return ImageServer(root, f"http://127.0.0.1:{httpd.server_address[1]}", []), httpd
