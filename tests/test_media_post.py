"""Tests for the webhook delivery half of videosynth.media.fetch (post_guarded and its URL checks).

Network rule: every request goes to a loopback server on 127.0.0.1 started here. Other addresses are only
ever passed to the pure functions ``validate_delivery_url`` and ``delivery_host_forbidden``, or refused by the
address check before any connection is made.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from videosynth.media.fetch import (
    MAX_DELIVERY_URL,
    PostOutcome,
    delivery_host_forbidden,
    post_guarded,
    validate_delivery_url,
)

BIG_RESPONSE = 64 * 1024 * 1024  # what /big would send if the client kept reading
# Generous bound for "returned at about the deadline" on a loaded machine; the tests never time tightly.
SLACK_S = 5.0


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.stop = threading.Event()
        self.big_sent = 0
        self.big_done = threading.Event()
        self.redirect_to = ""

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        with self.lock:
            self.connections += 1
        return conn, addr

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients hanging up mid-answer is what several tests provoke; no traceback from a server thread.
        pass

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers.items()), body))
        try:
            self._route()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self) -> None:
        path = self.path
        if path == "/ok":
            self._send(200, b"thanks", {"Content-Type": "text/plain"})
        elif path == "/no-content":
            self._send(204)
        elif path == "/error":
            self._send(500, b"boom")
        elif path == "/missing":
            self._send(404)
        elif path.startswith("/redirect/"):
            status = int(path.rsplit("/", 1)[1])
            self._send(status, headers={"Location": self.server.redirect_to})
        elif path == "/big":
            self._big()
        elif path == "/drip-headers":
            self._drip_headers()
        elif path == "/ok-then-silent":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            self.server.stop.wait(20)
            self.close_connection = True
        else:
            self._send(404)

    def _big(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(BIG_RESPONSE))
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while self.server.big_sent < BIG_RESPONSE:
                self.wfile.write(chunk)
                self.server.big_sent += len(chunk)
        finally:
            self.close_connection = True
            self.server.big_done.set()

    def _drip_headers(self) -> None:
        # A status line and headers that never end: every read succeeds, only the total deadline can stop it.
        self.close_connection = True
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 10_000
        for byte in head:
            if self.server.stop.wait(0.2):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()


def _serve() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture()
def server() -> Iterator[_Server]:
    yield from _serve()


@pytest.fixture()
def other_server() -> Iterator[_Server]:
    yield from _serve()


class _Listener:
    """A raw loopback listener for receivers that accept and then do nothing (no answer, no reading)."""

    def __init__(self, *, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before listen so accepted sockets inherit it: a small window fills at once.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture()
def listener() -> Iterator[_Listener]:
    lst = _Listener()
    yield lst
    lst.close()


# ------------------------------------------------------------------------------------------------------------
# Deliveries to loopback receivers
# ------------------------------------------------------------------------------------------------------------


def test_ok_delivers_exact_body_and_headers(server: _Server) -> None:
    body = b'{"id": "task_1", "status": "succeeded", "bytes": "\\u00e9\\u0000"}'
    headers = {
        "Content-Type": "application/json",
        "X-Videosynth-Signature": "t=1700000000,v1=abc123",
        "X-Videosynth-Event": "task.succeeded",
    }
    outcome = post_guarded(server.url("/ok"), body, headers, allow_private=True, timeout_s=10.0)
    assert outcome == PostOutcome(200, None)
    assert outcome.ok
    assert len(server.requests) == 1
    path, received, received_body = server.requests[0]
    assert path == "/ok"
    assert received_body == body
    for key, value in headers.items():
        assert received[key] == value
    assert received["Content-Length"] == str(len(body))
    assert received["User-Agent"] == "videosynth-webhooks/1.0"
    assert received["Host"] == f"127.0.0.1:{server.port}"


def test_caller_user_agent_wins(server: _Server) -> None:
    outcome = post_guarded(
        server.url("/ok"), b"x", {"user-agent": "custom/2.0"}, allow_private=True, timeout_s=10.0
    )
    assert outcome.ok
    _, received, _ = server.requests[0]
    assert [v for k, v in received.items() if k.lower() == "user-agent"] == ["custom/2.0"]


def test_empty_body_and_204(server: _Server) -> None:
    outcome = post_guarded(server.url("/no-content"), b"", {}, allow_private=True, timeout_s=10.0)
    assert outcome == PostOutcome(204, None)
    assert server.requests[0][2] == b""


@pytest.mark.parametrize(("path", "status"), [("/error", 500), ("/missing", 404)])
def test_http_error_status(server: _Server, path: str, status: int) -> None:
    outcome = post_guarded(server.url(path), b"{}", {}, allow_private=True, timeout_s=10.0)
    assert outcome == PostOutcome(status, f"HTTP {status}")
    assert not outcome.ok


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed(server: _Server, other_server: _Server, status: int) -> None:
    server.redirect_to = other_server.url("/ok")
    outcome = post_guarded(server.url(f"/redirect/{status}"), b"{}", {}, allow_private=True, timeout_s=10.0)
    assert outcome == PostOutcome(status, f"redirects are not followed (HTTP {status})")
    assert not outcome.ok
    assert [p for p, _, _ in server.requests] == [f"/redirect/{status}"]
    assert other_server.connections == 0
    assert other_server.requests == []


def test_silent_receiver_times_out_at_deadline(listener: _Listener) -> None:
    start = time.monotonic()
    outcome = post_guarded(
        f"http://127.0.0.1:{listener.port}/hook", b"{}", {}, allow_private=True, timeout_s=1.0
    )
    assert time.monotonic() - start < 1.0 + SLACK_S
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "timed out" in outcome.error
    assert outcome.error == "timed out after 1.0 s"
    assert not outcome.ok


def test_header_drip_times_out_at_deadline(server: _Server) -> None:
    # Each byte arrives well within any per-read timeout; only the total deadline can end this.
    start = time.monotonic()
    outcome = post_guarded(server.url("/drip-headers"), b"{}", {}, allow_private=True, timeout_s=1.5)
    assert time.monotonic() - start < 1.5 + SLACK_S
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "timed out" in outcome.error


def test_receiver_that_never_reads_a_large_body_times_out() -> None:
    # The body cannot fit in the socket buffers, so sending it blocks; the deadline must cut the send too.
    lst = _Listener(receive_buffer=4096)
    try:
        start = time.monotonic()
        outcome = post_guarded(
            f"http://127.0.0.1:{lst.port}/hook",
            b"b" * (32 * 1024 * 1024),
            {},
            allow_private=True,
            timeout_s=1.0,
        )
        assert time.monotonic() - start < 1.0 + SLACK_S
    finally:
        lst.close()
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "timed out" in outcome.error


def test_slowly_reading_receiver_cannot_stretch_the_send() -> None:
    # A receiver that keeps reading, but slower than the body could be sent, lets each send() make a little
    # progress; written as one buffer, every send() would get the whole time left (measured here: 12 s for a
    # 1 s deadline). Sent in pieces, the deadline holds.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    done = threading.Event()

    def read_slowly() -> None:
        sock.settimeout(10)
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(1)
            while not done.is_set():
                try:
                    if not conn.recv(256 * 1024):
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return
                time.sleep(0.05)

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    try:
        start = time.monotonic()
        outcome = post_guarded(
            f"http://127.0.0.1:{sock.getsockname()[1]}/hook",
            b"b" * (64 * 1024 * 1024),
            {},
            allow_private=True,
            timeout_s=1.0,
        )
        assert time.monotonic() - start < 1.0 + SLACK_S
    finally:
        done.set()
        reader.join(5)
        sock.close()
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "timed out" in outcome.error


def test_answer_then_stalled_body_is_still_ok(server: _Server) -> None:
    # The status line is the receiver's answer; the body is only drained, and only until the deadline.
    start = time.monotonic()
    outcome = post_guarded(server.url("/ok-then-silent"), b"{}", {}, allow_private=True, timeout_s=1.0)
    assert time.monotonic() - start < 1.0 + SLACK_S
    assert outcome == PostOutcome(200, None)


def test_huge_response_body_is_not_read(server: _Server) -> None:
    outcome = post_guarded(
        server.url("/big"), b"{}", {}, allow_private=True, timeout_s=10.0, max_response_bytes=64 * 1024
    )
    assert outcome == PostOutcome(200, None)
    assert server.big_done.wait(10), "server still sending: the client did not hang up"
    # Socket buffers on loopback take a few MB; the client must have hung up long before the end.
    assert server.big_sent < BIG_RESPONSE // 2


def test_zero_response_bytes_reads_no_body(server: _Server) -> None:
    outcome = post_guarded(
        server.url("/big"), b"{}", {}, allow_private=True, timeout_s=10.0, max_response_bytes=0
    )
    assert outcome.ok
    assert server.big_done.wait(10)
    assert server.big_sent < BIG_RESPONSE // 2


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1"])
def test_loopback_refused_when_private_not_allowed(server: _Server, host: str) -> None:
    outcome = post_guarded(server.url("/ok", host=host), b"{}", {}, allow_private=False, timeout_s=5.0)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "which is not a public address" in outcome.error
    assert outcome.error.startswith(f"{host} resolves to ")
    assert server.connections == 0
    assert server.requests == []


def test_connection_refused_on_closed_port() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    outcome = post_guarded(f"http://127.0.0.1:{port}/hook", b"{}", {}, allow_private=True, timeout_s=5.0)
    assert outcome == PostOutcome(None, "connection refused")


def test_tls_to_a_plain_http_receiver_fails_without_raising(server: _Server) -> None:
    outcome = post_guarded(
        f"https://127.0.0.1:{server.port}/ok", b"{}", {}, allow_private=True, timeout_s=5.0
    )
    assert outcome.status_code is None
    assert outcome.error is not None
    assert len(outcome.error) <= 300
    assert server.requests == []


def test_proxy_environment_is_ignored(
    server: _Server, other_server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = other_server.url("")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    outcome = post_guarded(server.url("/ok"), b"{}", {}, allow_private=True, timeout_s=10.0)
    assert outcome.ok
    assert server.connections == 1
    assert other_server.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/hook",
        "file:///etc/passwd",
        "http://user:secret@127.0.0.1/hook",
        "http:///no-host",
        "127.0.0.1/hook",
        "",
    ],
)
def test_invalid_url_is_an_outcome_without_traffic(server: _Server, url: str) -> None:
    outcome = post_guarded(
        url.replace("127.0.0.1", f"127.0.0.1:{server.port}"), b"{}", {}, allow_private=True, timeout_s=5.0
    )
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("invalid URL")
    assert server.connections == 0


def test_programming_errors_raise() -> None:
    url = "http://127.0.0.1:9/hook"  # never reached: every call is refused before connecting
    with pytest.raises(TypeError):
        post_guarded(url, "not bytes", {}, allow_private=True, timeout_s=1.0)  # type: ignore[arg-type]
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            post_guarded(url, b"", {}, allow_private=True, timeout_s=bad)
    with pytest.raises(ValueError):
        post_guarded(url, b"", {}, allow_private=True, timeout_s=1.0, max_response_bytes=-1)


def test_outcome_ok_property() -> None:
    assert PostOutcome(200, None).ok
    assert PostOutcome(299, None).ok
    assert not PostOutcome(199, "HTTP 199").ok
    assert not PostOutcome(300, "redirects are not followed (HTTP 300)").ok
    assert not PostOutcome(None, "connection refused").ok


# ------------------------------------------------------------------------------------------------------------
# validate_delivery_url (pure; no traffic)
# ------------------------------------------------------------------------------------------------------------

ACCEPTED_URLS = [
    "http://example.com/hook",
    "https://example.com/hook",
    "HTTPS://Example.COM:8443/a/b?c=d&e=f#frag",
    "https://hooks.example.com",
    "http://[2001:db8::1]:8080/x",
    "http://10.0.0.1/hook",  # syntax only: addresses are judged at connect time
    "https://xn--nxasmq6b.com/",
    "https://example.com/" + "a" * (MAX_DELIVERY_URL - len("https://example.com/")),
]

REFUSED_URLS = [
    "",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "gopher://example.com/",
    "javascript:alert(1)",
    "data:text/plain,hi",
    "example.com/hook",
    "//example.com/hook",
    "http:///no-host",
    "http:example.com",
    "http://user:secret@example.com/hook",
    "http://user@example.com/hook",
    "http://@example.com/hook",
    "https://a:b@c@example.com/",
    "http://example.com:0/",
    "http://example.com:99999/",
    "http://example.com:port/",
    " http://example.com/",
    "http://example.com/ hook",
    "http://exa mple.com/",
    "http://example.com/\nX-Injected: 1",
    "http://example.com/\x00",
    "https://example.com/" + "a" * (MAX_DELIVERY_URL + 1 - len("https://example.com/")),
]


@pytest.mark.parametrize("url", ACCEPTED_URLS)
def test_validate_accepts(url: str) -> None:
    assert validate_delivery_url(url) is None


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_validate_refuses(url: str) -> None:
    problem = validate_delivery_url(url)
    assert isinstance(problem, str)
    assert problem
    assert len(problem) <= 300


def test_validate_messages() -> None:
    assert validate_delivery_url("ftp://example.com/") == "only http and https URLs are accepted"
    assert (
        validate_delivery_url("http://u:p@example.com/") == "the URL must not contain a user name or password"
    )
    assert validate_delivery_url("http:///x") == "the URL has no host"
    message = validate_delivery_url("https://example.com/" + "a" * 3000)
    assert message == f"the URL is longer than {MAX_DELIVERY_URL} characters"


def test_validate_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        validate_delivery_url(b"http://example.com/")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------
# delivery_host_forbidden (pure; no traffic)
# ------------------------------------------------------------------------------------------------------------

FORBIDDEN_HOSTS = [
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "127.0.0.1",
    "0.0.0.0",
    "100.64.0.1",
    "192.0.2.1",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "[::1]",
    "::",
    "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:10.0.0.1",
    "[::ffff:169.254.169.254]",
    "fc00::1",
    "fd00::1",
    "fe80::1",
    "[fe80::1%25eth0]",
    "fe80::1%eth0",
    "64:ff9b::a00:1",
    "2001:db8::1",
    " 10.0.0.1 ",
    # Legacy numeric spellings the resolver reads as 127.0.0.1 / 10.0.0.1.
    "127.1",
    "0x7f.0.0.1",
    "0x7f.1",
    "017700000001",
    "2130706433",
    "10.1",
    "0",
]

ALLOWED_HOSTS = [
    "8.8.8.8",
    "1.1.1.1",
    "[2606:4700:4700::1111]",
    "2001:4860:4860::8888",
    "64:ff9b::808:808",
    # Names are judged when connecting, after resolving, not here.
    "example.com",
    "hooks.example.com",
    "localhost",
    "internal.corp",
    "10.0.0.1.example.com",
    "xn--nxasmq6b.com",
    "",
    # Numeric-looking text that is no address to the resolver either.
    "999.1.1.1",
    "1.2.3.4.5",
    "4294967296",
    "0x",
    "1.2.3",  # inet_aton reads 1.2.0.3: public
]


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
def test_forbidden_hosts(host: str) -> None:
    assert delivery_host_forbidden(host) is True


@pytest.mark.parametrize("host", ALLOWED_HOSTS)
def test_allowed_hosts(host: str) -> None:
    assert delivery_host_forbidden(host) is False
