"""Tests for videosynth.media.fetch.

Network rule: every request goes to a loopback server started here. Other addresses are only ever passed to
the pure function ``is_forbidden_address``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import http.server
import io
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from videosynth.errors import (
    Canceled,
    ErrorKind,
    ForbiddenAddress,
    InvalidImageFormat,
    InvalidImageSize,
    MediaConnectionRefused,
    MediaDownloadFailed,
    MediaTimeout,
)
from videosynth.media.fetch import FetchPolicy, fetch_media, is_forbidden_address, parse_data_url

# Self-signed, only used to make a loopback TLS server say hello; the client is expected to reject it.
_TEST_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaF8wzz9pngE61fy+
NXqg3WhGHa/DHccCmmqSBkwjl1yhRANCAATQ4hmVE46aBLmdaDjK8PWHiosVzaIu
30w6mFaDlKRNhd46lE70r1AzzqWiFMp7oG9aKNLUT2TpyS/6DBacga2b
-----END PRIVATE KEY-----
"""
_TEST_CERT = """-----BEGIN CERTIFICATE-----
MIIBizCCATGgAwIBAgIUL0rLyNx526QLLtPJcgbkheBoY/cwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPdmlkZW9zeW50aC10ZXN0MCAXDTI2MTEyNTAzNTQwM1oYDzIx
MjYxMTAxMDM1NDAzWjAaMRgwFgYDVQQDDA92aWRlb3N5bnRoLXRlc3QwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAATQ4hmVE46aBLmdaDjK8PWHiosVzaIu30w6mFaD
lKRNhd46lE70r1AzzqWiFMp7oG9aKNLUT2TpyS/6DBacga2bo1MwUTAdBgNVHQ4E
FgQUaPiA3d/s9KC+WUSJcDx4xejhuPQwHwYDVR0jBBgwFoAUaPiA3d/s9KC+WUSJ
cDx4xejhuPQwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiAdWXwv
pBfd0tEa+xVbIHHZpJEz4rGZkKNq1m79GCRc9wIhAI3KW9r0J9hps2gei+nd7GzF
GbD3/RSdcfIV9bxTjgrQ
-----END CERTIFICATE-----
"""

BIG_BODY = 40 * 1024 * 1024  # what the chunked endpoint would send if the client kept reading
SMALL_CAP = 1024 * 1024


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: int = socket.AF_INET) -> None:
        self.address_family = family
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.chunked_sent = 0
        self.chunked_done = threading.Event()

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        with self.lock:
            self.connections += 1
        return conn, addr

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-body (which several tests provoke on purpose) is not a server bug, and
        # socketserver's default would print a traceback from a background thread.
        pass

    @property
    def port(self) -> int:
        return int(self.server_address[1])


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

    def _redirect(self, location: str, status: int = 302) -> None:
        self._send(status, headers={"Location": location})

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers.items())))
        try:
            self._route()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self) -> None:
        path = self.path
        if path == "/ok":
            self._send(200, PNG, {"Content-Type": "image/png"})
        elif path.startswith("/redirect/"):
            hops = int(path.rsplit("/", 1)[1])
            self._redirect("/ok" if hops <= 1 else f"/redirect/{hops - 1}")
        elif path == "/dir/relative":
            self._redirect("../ok", 301)
        elif path == "/to-ftp":
            self._redirect("ftp://127.0.0.1/image.png")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd", 307)
        elif path == "/no-location":
            self._send(302)
        elif path == "/missing":
            self._send(404, b"not here")
        elif path == "/error":
            self._send(500, b"boom")
        elif path == "/gzip":
            self._send(200, gzip.compress(b"\0" * 100_000), {"Content-Encoding": "gzip"})
        elif path == "/big-content-length":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG_BODY))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
            self.close_connection = True
        elif path == "/big-chunked":
            self._chunked_forever()
        elif path == "/slow-drip":
            self._drip()
        elif path == "/silent":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            time.sleep(20)  # longer than any timeout a test uses; the thread is a daemon
            self.close_connection = True
        else:
            self._send(404)

    def _chunked_forever(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"y" * 65536
        framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        try:
            while self.server.chunked_sent < BIG_BODY:
                self.wfile.write(framed)
                self.server.chunked_sent += len(chunk)
            self.wfile.write(b"0\r\n\r\n")
        finally:
            self.close_connection = True
            self.server.chunked_done.set()

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        stop = time.monotonic() + 20
        self.close_connection = True
        while time.monotonic() < stop:
            self.wfile.write(b"z")
            self.wfile.flush()
            time.sleep(0.1)


def _start(server: _Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0))
    thread = _start(srv)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


OPEN = FetchPolicy(allow_private=True, total_timeout=10.0)
STRICT = FetchPolicy(allow_private=False, total_timeout=10.0)


def _url(srv: _Server, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{srv.port}{path}"


# ------------------------------------------------------------------------------------------------------------
# is_forbidden_address (pure; no traffic)
# ------------------------------------------------------------------------------------------------------------

FORBIDDEN = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.5.4",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "192.0.0.1",
    "::",
    "::1",
    "[::1]",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "[fe80::1%25eth0]",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "2001::1",  # Teredo
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "[::ffff:169.254.169.254]",
    "::7f00:1",  # IPv4-compatible
    "::808:808",  # IPv4-compatible, deprecated even with a public IPv4 inside
    "::ffff:0:a00:1",  # SIIT IPv4-translated
    "64:ff9b::a00:1",
    "64:ff9b::7f00:1",
    "64:ff9b:1::808:808",  # local-use NAT64
    "2002:a00:1::1",  # 6to4 around 10.0.0.1
    "2002:7f00:1::",
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "64:ff9b::808:808",  # NAT64 of a public IPv4: what DNS64 hands an IPv6-only host
    "2002:808:808::1",  # 6to4 of a public IPv4
]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_forbidden_addresses(address: str) -> None:
    assert is_forbidden_address(address) is True


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_allowed(address: str) -> None:
    assert is_forbidden_address(address) is False


def test_forbidden_accepts_address_objects() -> None:
    assert is_forbidden_address(ipaddress.ip_address("10.1.2.3")) is True
    assert is_forbidden_address(ipaddress.ip_address("::ffff:192.168.0.1")) is True
    assert is_forbidden_address(ipaddress.ip_address("8.8.4.4")) is False


@pytest.mark.parametrize("text", ["example.com", "", "127.1", "1.2.3"])
def test_forbidden_rejects_non_literals(text: str) -> None:
    # Spellings like 127.1 must go through the resolver (fetch does); the pure function only takes literals.
    with pytest.raises(ValueError):
        is_forbidden_address(text)


# ------------------------------------------------------------------------------------------------------------
# http(s) fetching against loopback servers
# ------------------------------------------------------------------------------------------------------------


def test_fetch_ok(server: _Server) -> None:
    assert fetch_media(_url(server, "/ok"), OPEN) == PNG
    path, headers = server.requests[-1]
    assert path == "/ok"
    assert headers["Accept-Encoding"] == "identity"
    assert headers["Host"] == f"127.0.0.1:{server.port}"


def test_host_header_keeps_hostname(server: _Server) -> None:
    # We connect to the resolved IP, but the request must still name the host the user gave.
    assert fetch_media(_url(server, "/ok", host="localhost"), OPEN) == PNG
    assert server.requests[-1][1]["Host"] == f"localhost:{server.port}"


def test_redirect_chain_of_three_is_followed(server: _Server) -> None:
    assert fetch_media(_url(server, "/redirect/3"), OPEN) == PNG
    assert [p for p, _ in server.requests] == ["/redirect/3", "/redirect/2", "/redirect/1", "/ok"]


def test_fourth_redirect_is_refused(server: _Server) -> None:
    with pytest.raises(MediaDownloadFailed, match="redirects") as info:
        fetch_media(_url(server, "/redirect/4"), OPEN)
    assert type(info.value) is MediaDownloadFailed
    assert "/ok" not in [p for p, _ in server.requests]
    assert len(server.requests) == 4


def test_max_redirects_is_configurable(server: _Server) -> None:
    with pytest.raises(MediaDownloadFailed, match="redirects"):
        fetch_media(_url(server, "/redirect/1"), FetchPolicy(allow_private=True, max_redirects=0))


def test_relative_redirect_is_resolved(server: _Server) -> None:
    assert fetch_media(_url(server, "/dir/relative"), OPEN) == PNG
    assert [p for p, _ in server.requests] == ["/dir/relative", "/ok"]


@pytest.mark.parametrize("path", ["/to-ftp", "/to-file"])
def test_redirect_to_other_scheme_is_refused(server: _Server, path: str) -> None:
    with pytest.raises(MediaDownloadFailed, match="only http and https") as info:
        fetch_media(_url(server, path), OPEN)
    assert type(info.value) is MediaDownloadFailed


def test_redirect_without_location(server: _Server) -> None:
    with pytest.raises(MediaDownloadFailed, match="HTTP 302"):
        fetch_media(_url(server, "/no-location"), OPEN)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "127.1",
        "017700000001",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "[::1]",
    ],
)
def test_loopback_spellings_are_forbidden_before_connecting(server: _Server, host: str) -> None:
    with pytest.raises(ForbiddenAddress) as info:
        fetch_media(_url(server, "/ok", host=host), STRICT)
    assert "which is not a public address" in info.value.detail
    assert info.value.kind is ErrorKind.MEDIA_FORBIDDEN_ADDRESS
    assert server.connections == 0
    assert server.requests == []


def test_default_policy_forbids_private(server: _Server) -> None:
    with pytest.raises(ForbiddenAddress):
        fetch_media(_url(server, "/ok"), FetchPolicy())
    assert server.connections == 0


def test_proxy_environment_is_ignored(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = _Server(("127.0.0.1", 0))
    thread = _start(proxy)
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert fetch_media(_url(server, "/ok"), OPEN) == PNG
        assert proxy.connections == 0
        assert server.connections == 1
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)


def test_content_length_over_cap(server: _Server) -> None:
    policy = FetchPolicy(allow_private=True, max_bytes=SMALL_CAP)
    with pytest.raises(InvalidImageSize, match=str(BIG_BODY)):
        fetch_media(_url(server, "/big-content-length"), policy)


def test_chunked_body_over_cap_stops_early(server: _Server) -> None:
    policy = FetchPolicy(allow_private=True, max_bytes=SMALL_CAP)
    with pytest.raises(InvalidImageSize):
        fetch_media(_url(server, "/big-chunked"), policy)
    assert server.chunked_done.wait(10), "server still sending: the client did not hang up"
    # The server may fill socket buffers (a few MB on loopback) but must not get to send it all.
    assert server.chunked_sent < BIG_BODY // 2


def test_slow_drip_trips_total_deadline(server: _Server) -> None:
    policy = FetchPolicy(allow_private=True, read_timeout=5.0, total_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(MediaTimeout, match="timeout") as info:
        fetch_media(_url(server, "/slow-drip"), policy)
    elapsed = time.monotonic() - start
    # The drip goes on for 20 s and every read succeeds; only the 1 s total deadline can end it. The upper
    # bound leaves a loaded machine room.
    assert 0.9 <= elapsed < 10
    assert info.value.kind is ErrorKind.MEDIA_TIMEOUT


def test_silent_server_is_cut_at_total_deadline_not_read_timeout(server: _Server) -> None:
    # read_timeout alone would wait 10 s; each socket read is clamped to the total deadline.
    policy = FetchPolicy(allow_private=True, read_timeout=10.0, total_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(MediaTimeout):
        fetch_media(_url(server, "/silent"), policy)
    # The server is silent for 20 s: a 10 s read timeout would have ended it later than this.
    assert time.monotonic() - start < 6


def test_gzip_content_encoding_is_refused(server: _Server) -> None:
    with pytest.raises(MediaDownloadFailed, match="Content-Encoding: gzip") as info:
        fetch_media(_url(server, "/gzip"), OPEN)
    assert type(info.value) is MediaDownloadFailed


def test_connection_refused() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(MediaConnectionRefused) as info:
        fetch_media(f"http://127.0.0.1:{port}/x.png", OPEN)
    assert info.value.detail == f"Connection to 127.0.0.1:{port} refused, please provide available URL."
    assert info.value.kind is ErrorKind.MEDIA_CONNECTION_REFUSED


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/error", 500)])
def test_http_error_status(server: _Server, path: str, status: int) -> None:
    url = _url(server, path)
    with pytest.raises(MediaDownloadFailed) as info:
        fetch_media(url, OPEN)
    assert type(info.value) is MediaDownloadFailed
    assert info.value.detail == f"Failed to download {url}: HTTP {status}"


def test_long_url_is_truncated_in_message(server: _Server) -> None:
    url = _url(server, "/missing?" + "q" * 5000)
    with pytest.raises(MediaDownloadFailed) as info:
        fetch_media(url, OPEN)
    assert len(info.value.detail) < 300
    assert "HTTP 404" in info.value.detail


def test_credentials_are_not_echoed(server: _Server) -> None:
    with pytest.raises(MediaDownloadFailed) as info:
        fetch_media(f"http://alice:s3cret@127.0.0.1:{server.port}/missing", OPEN)
    assert "s3cret" not in info.value.detail


def test_ipv6_loopback_server() -> None:
    try:
        srv = _Server(("::1", 0), socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    thread = _start(srv)
    try:
        assert fetch_media(f"http://[::1]:{srv.port}/ok", OPEN) == PNG
        with pytest.raises(ForbiddenAddress):
            fetch_media(f"http://[::1]:{srv.port}/ok", STRICT)
        assert srv.connections == 1
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_tls_sni_uses_hostname_not_ip(tmp_path: Path) -> None:
    """We connect to the IP we checked, but TLS must still present the URL's hostname."""
    (tmp_path / "key.pem").write_text(_TEST_KEY)
    (tmp_path / "cert.pem").write_text(_TEST_CERT)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen: list[str | None] = []

    def remember(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name)

    context.sni_callback = remember  # type: ignore[assignment]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve_one() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            # The client rejects our self-signed certificate, as it should.
            with contextlib.suppress(ssl.SSLError, OSError):
                context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        with pytest.raises(MediaDownloadFailed) as info:
            fetch_media(f"https://localhost:{port}/ok", OPEN)
    finally:
        thread.join(10)
        listener.close()
    assert type(info.value) is MediaDownloadFailed  # certificate failure, not "refused" or "timeout"
    assert seen == ["localhost"]


# ------------------------------------------------------------------------------------------------------------
# Schemes and data: URLs
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/a.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "javascript:alert(1)",
        "",
        "  ",
        "/a",
    ],
)
def test_unsupported_scheme(url: str) -> None:
    with pytest.raises(MediaDownloadFailed) as info:
        fetch_media(url, OPEN)
    assert type(info.value) is MediaDownloadFailed


def _data_url(payload: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


def test_data_url_roundtrip() -> None:
    assert parse_data_url(_data_url(PNG)) == ("image/png", PNG)
    assert fetch_media(_data_url(PNG), STRICT) == PNG


@pytest.mark.parametrize(
    ("mime", "expected"),
    [("image/jpeg", "image/jpeg"), ("IMAGE/JPG", "image/jpeg"), ("image/webp", "image/webp")],
)
def test_data_url_mimes(mime: str, expected: str) -> None:
    assert parse_data_url(_data_url(b"abc", mime)) == (expected, b"abc")


def test_data_url_tolerates_case_padding_and_line_breaks() -> None:
    encoded = base64.b64encode(PNG[:100]).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)).rstrip("=")
    assert parse_data_url("DATA:image/png;BASE64," + wrapped) == ("image/png", PNG[:100])


@pytest.mark.parametrize("mime", ["image/gif", "image/bmp", "text/html", "image/svg+xml", ""])
def test_data_url_bad_mime(mime: str) -> None:
    url = _data_url(b"SECRETPAYLOAD" * 10, mime)
    with pytest.raises(InvalidImageFormat) as info:
        fetch_media(url, OPEN)
    assert base64.b64encode(b"SECRETPAYLOAD").decode()[:12] not in info.value.detail


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png,rawbytes",  # not base64
        "data:image/png;base64",  # no comma
        "data:image/png;base64,!!!!",
        "data:image/png;base64,QUJD*REVG",
        "data:image/png;base64,",
        "data:image/png;base64,A",
    ],
)
def test_data_url_bad_encoding(url: str) -> None:
    with pytest.raises(InvalidImageFormat):
        parse_data_url(url)


def test_data_url_over_cap() -> None:
    with pytest.raises(InvalidImageSize):
        fetch_media(_data_url(b"\0" * 2001), FetchPolicy(max_bytes=2000))
    assert fetch_media(_data_url(b"\0" * 2000), FetchPolicy(max_bytes=2000)) == b"\0" * 2000


def test_data_url_size_is_judged_before_decoding() -> None:
    # Invalid base64 would be a format error if it were decoded; the encoded length alone must refuse it.
    huge = "data:image/png;base64," + "!" * 50_000_000
    with pytest.raises(InvalidImageSize):
        parse_data_url(huge, max_bytes=1000)


@pytest.mark.parametrize("path", ["/silent", "/slow-drip"])
def test_a_download_that_is_called_off_stops(server: _Server, path: str) -> None:
    # Without the call-off the read timeout (10 s) or the total deadline (30 s) would end it.
    policy = FetchPolicy(allow_private=True, read_timeout=10.0, total_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(Canceled):
        fetch_media(_url(server, path), policy, should_stop=lambda: time.monotonic() - started > 0.5)
    assert time.monotonic() - started < 5.0


def test_a_connect_that_is_called_off_stops() -> None:
    # A listening socket whose backlog is full: connects hang in SYN_SENT, as to a black-holed address.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        policy = FetchPolicy(allow_private=True, connect_timeout=10.0, total_timeout=30.0)
        started = time.monotonic()
        with pytest.raises(Canceled) as info:
            fetch_media(
                f"http://127.0.0.1:{port}/x.png", policy, should_stop=lambda: time.monotonic() - started > 0.5
            )
        assert time.monotonic() - started < 5.0, info.value
    finally:
        for s in fillers:
            s.close()
        listener.close()
