"""Requests offering an h2c upgrade (Java's default HttpClient, curl --http2) are answered over HTTP/1.1.

Raw sockets, so the test decides how the bytes are split into packets.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import pytest
import uvicorn
from websockets.sync.client import connect

from conftest import SUBMIT_PATH, LiveServer, free_socket
from videosynth.api.server import uvicorn_config

PROMPT = "[Image 1]中的折扇缓缓打开"
OFFER = (
    b"Connection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\n"
    b"HTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n"
)
PAUSE_S = 0.3  # long enough that the server has parsed the head before the body arrives


def submit_body() -> bytes:
    body = {
        "model": "happyhorse-1.1-r2v",
        "input": {
            "prompt": PROMPT,
            "media": [{"type": "reference_image", "url": "https://img.example/a.png"}],
        },
        "parameters": {"resolution": "720P", "duration": 3},
    }
    return json.dumps(body, ensure_ascii=False).encode()


def head(server: LiveServer, method: str, path: str, extra: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.key}\r\n".encode()
        + OFFER
        + extra
    )


def post_head(server: LiveServer, body: bytes) -> bytes:
    return head(
        server,
        "POST",
        SUBMIT_PATH,
        b"X-DashScope-Async: enable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body),
    )


def read_response(stream: BinaryIO) -> tuple[bytes, dict[bytes, bytes], Any]:
    """Status line, headers and JSON body of one HTTP/1.1 response (Content-Length or chunked)."""
    status = stream.readline().rstrip()
    headers: dict[bytes, bytes] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while size := int(stream.readline().split(b";")[0], 16):
            body += stream.read(size)
            stream.readline()
        stream.readline()
    else:
        body = stream.read(int(headers.get(b"content-length", b"0")))
    assert headers.get(b"content-type", b"").startswith(b"application/json"), (status, headers, body)
    return status, headers, json.loads(body)


@contextmanager
def raw_connection(server: LiveServer) -> Iterator[tuple[socket.socket, BinaryIO]]:
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as stream:
        yield sock, stream


def assert_pending(response: tuple[bytes, dict[bytes, bytes], Any]) -> str:
    status, _, data = response
    assert status == b"HTTP/1.1 200 OK", (status, data)
    assert data["output"]["task_status"] == "PENDING", data
    return str(data["output"]["task_id"])


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


@pytest.mark.parametrize(
    "delivery", ["with-headers", "later-packet", "head-split-body-later", "chunked-later"]
)
def test_h2c_offer_keeps_the_body(live_server: LiveServer, delivery: str) -> None:
    body = submit_body()
    with raw_connection(live_server) as (sock, stream):
        if delivery == "with-headers":
            sock.sendall(post_head(live_server, body) + body)
        elif delivery == "later-packet":
            sock.sendall(post_head(live_server, body))
            time.sleep(PAUSE_S)
            sock.sendall(body)
        elif delivery == "head-split-body-later":
            first = post_head(live_server, body)
            sock.sendall(first[:40])
            time.sleep(PAUSE_S)
            sock.sendall(first[40:])
            time.sleep(PAUSE_S)
            sock.sendall(body)
        else:
            extra = b"X-DashScope-Async: enable\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            sock.sendall(head(live_server, "POST", SUBMIT_PATH, extra))
            time.sleep(PAUSE_S)
            sock.sendall(chunked(body))
        task_id = assert_pending(read_response(stream))

        # The connection stays HTTP/1.1 and usable; the poll carries the offer too (curl --http2 does).
        sock.sendall(head(live_server, "GET", f"/api/v1/tasks/{task_id}", b"\r\n"))
        status, _, data = read_response(stream)
    assert status == b"HTTP/1.1 200 OK"
    assert data["output"]["task_id"] == task_id
    assert data["output"]["orig_prompt"] == PROMPT


def test_pipelined_offers_each_keep_their_body(live_server: LiveServer) -> None:
    body = submit_body()
    request = post_head(live_server, body) + body
    with raw_connection(live_server) as (sock, stream):
        sock.sendall(request + request)
        first = assert_pending(read_response(stream))
        second = assert_pending(read_response(stream))
    assert first != second


def test_invalid_json_with_an_offer_is_still_a_json_error(live_server: LiveServer) -> None:
    """The body reaches the app: the error is about its content, not a missing body."""
    body = b'{"model": "happyhorse-1.1-r2v"}'
    with raw_connection(live_server) as (sock, stream):
        sock.sendall(post_head(live_server, body))
        time.sleep(PAUSE_S)
        sock.sendall(body)
        status, _, data = read_response(stream)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert data["code"] == "InvalidParameter"
    assert "Required body invalid" not in data["message"] and "input" in data["message"], data


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo:" + message["text"]})
        await send({"type": "websocket.close"})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_websocket_upgrades_still_work() -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(echo_app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "echo:hi"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
