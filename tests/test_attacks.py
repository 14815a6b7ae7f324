"""Exhaustion attacks against a real `videosynth serve` process: its memory, temp space and responsiveness.

Each test starts its own server (API only), takes its idle memory, resets the kernel's peak counter
(``/proc/PID/clear_refs``), attacks it over loopback, and checks the peak stayed within
:data:`MEMORY_BUDGET_MB` of idle. The figures are printed (``pytest -s``) for docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import SUBMIT_PATH, free_socket

MEMORY_BUDGET_MB = 300
GIB = 1024**3
CHUNK = b"[" * (1024 * 1024)


@dataclass
class Served:
    base: str
    host: str
    port: int
    key: str
    pid: int
    tmpdir: Path

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
        raise AssertionError(field)

    def reset_peak(self) -> int:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        return self.status("VmRSS")

    def peak_growth_mb(self, idle: int) -> int:
        return self.status("VmHWM") - idle


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    key = "sk-attack-" + os.urandom(8).hex()
    tmpdir = tmp_path / "server-tmp"
    tmpdir.mkdir()
    env = {
        **os.environ,
        "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
        "VIDEOSYNTH_WORKERS": "0",
        "VIDEOSYNTH_API_KEYS": key,
        "TMPDIR": str(tmpdir),  # where a spooled upload would land
    }
    # Its log goes to a file, for the suite's secret check (conftest.py); stdout has only the banner.
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "videosynth", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    # A few warm requests, so the idle figure includes what any request loads.
    for _ in range(3):
        requests.get(f"{base}/api/v1/tasks/x", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    yield Served(base, "127.0.0.1", port, key, proc.pid, tmpdir)
    proc.terminate()
    proc.wait(30)


def _send_until_answered(sock: socket.socket, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send ``head`` then ``chunks`` until the server answers or hangs up; return what it answered."""
    sock.sendall(head)
    sock.settimeout(0)
    answer = b""
    for chunk in chunks:
        try:
            answer += sock.recv(65536)
        except BlockingIOError:
            pass
        except OSError:
            break
        if answer:
            break
        try:
            sock.settimeout(10)
            sock.sendall(chunk)
            sock.settimeout(0)
        except OSError:  # the server closed the connection: the answer, if any, is waiting
            break
    sock.settimeout(10)
    try:
        # The head and the body may come in separate segments: read up to the end of the body.
        while not _complete(answer):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    except OSError:
        pass
    return answer


def _complete(answer: bytes) -> bool:
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


def _chunked(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        sent += len(CHUNK)
        yield b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)


def _healthz_while(served: Served, attack: threading.Thread) -> list[float]:
    """Latencies of /healthz polled while ``attack`` runs."""
    latencies = []
    while attack.is_alive():
        t = time.monotonic()
        assert requests.get(served.base + "/healthz", timeout=30).status_code == 200
        latencies.append(time.monotonic() - t)
        time.sleep(0.05)
    return latencies


def test_a_one_gib_chunked_submit_is_refused_at_the_cap(served: Served) -> None:
    idle = served.reset_peak()
    head = (
        f"POST {SUBMIT_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.key}\r\n"
        "X-DashScope-Async: enable\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        answer = _send_until_answered(sock, head, _chunked(GIB))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"code":"InvalidParameter"' in answer and b'"request_id"' in answer
    growth = served.peak_growth_mb(idle)
    print(f"\n1 GiB chunked submit: 413, peak {growth} MB over idle {idle} MB")
    assert growth < MEMORY_BUDGET_MB


def test_a_160_mb_header_is_cut_off_and_health_stays_fast(served: Served) -> None:
    idle = served.reset_peak()
    outcome: dict[str, bytes] = {}

    def attack() -> None:
        with socket.create_connection((served.host, served.port), timeout=10) as sock:
            pieces = (b"a" * (1024 * 1024) for _ in range(160))
            outcome["answer"] = _send_until_answered(sock, b"GET /healthz HTTP/1.1\r\nX-Big: ", pieces)

    thread = threading.Thread(target=attack)
    thread.start()
    latencies = _healthz_while(served, thread)
    thread.join()
    assert outcome["answer"].startswith(b"HTTP/1.1 431"), outcome["answer"][:200]
    growth = served.peak_growth_mb(idle)
    print(
        f"\n160 MB header: 431, peak {growth} MB over idle {idle} MB; /healthz worst {max(latencies or [0]):.3f} s"
    )
    assert growth < MEMORY_BUDGET_MB
    assert max(latencies or [0]) < 2.0  # it stalled for seconds before


def test_an_unsigned_one_gib_upload_is_refused_before_anything_is_stored(served: Served) -> None:
    idle = served.reset_peak()
    boundary = "xBOUNDARYx"
    fields = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (
            ("key", "videosynth-instant/a/2026-12-02/b/x.png"),
            ("policy", "bogus"),
            ("Signature", "AAAA"),
        )
    )
    head = (
        f"POST /api/v1/uploads/oss HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    first = (
        fields + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    ).encode()

    def body() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(first), first)
        yield from _chunked(GIB)

    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        answer = _send_until_answered(sock, head, body())
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    spooled = sum(p.stat().st_size for p in served.tmpdir.rglob("*") if p.is_file())
    growth = served.peak_growth_mb(idle)
    print(
        f"\nunsigned 1 GiB upload: 403, peak {growth} MB over idle {idle} MB, {spooled} bytes of temp files"
    )
    assert spooled == 0
    assert growth < MEMORY_BUDGET_MB


def test_a_connection_that_never_finishes_its_head_is_closed(served: Served) -> None:
    from videosynth.api.server import HEAD_TIMEOUT_S

    with socket.create_connection((served.host, served.port), timeout=HEAD_TIMEOUT_S * 3) as silent, \
            socket.create_connection((served.host, served.port), timeout=HEAD_TIMEOUT_S * 3) as dripping:  # fmt: skip
        dripping.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):  # a reset is a close too
            assert silent.recv(1) == b""  # closed by the server
        for _ in range(int(HEAD_TIMEOUT_S * 3)):
            try:
                dripping.sendall(b"X-A: b\r\n")
            except OSError:
                break
            try:
                if dripping.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                # The server closed with our header lines unread, so the kernel answered with a reset: closed.
                break
            time.sleep(1)
        waited = time.monotonic() - started
    assert HEAD_TIMEOUT_S * 0.8 < waited < HEAD_TIMEOUT_S * 3
