"""Hostile input: every defect the black-box attack found (issue 8), each as it was reproduced, plus the
families that passed, so they stay passing. Answers must be DashScope-style 4xx JSON, never a 5xx."""

from __future__ import annotations

import json
import logging
import re
import socket
import time

import pytest
import requests

from conftest import SUBMIT_PATH, LiveServer

IMG = "https://img.example/a.png"  # never fetched: no worker runs in these tests


def _body(prompt: str = "[Image 1] walks", url: str = IMG) -> dict:
    return {
        "model": "happyhorse-1.1-r2v",
        "input": {"prompt": prompt, "media": [{"type": "reference_image", "url": url}]},
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5},
    }


def _post_raw(live_server: LiveServer, raw: bytes) -> requests.Response:
    return requests.post(
        live_server.base_url + SUBMIT_PATH,
        data=raw,
        headers={**live_server.headers(), "Content-Type": "application/json"},
        timeout=30,
    )


def _assert_refused(r: requests.Response, status: int = 400, code: str = "InvalidParameter") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["code"] == code and isinstance(data["message"], str) and data["message"], data
    assert re.fullmatch(r"[0-9a-f-]{36}", data["request_id"])
    return data


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR)
    return caplog


def _assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


# -------------------------------------------------------------------------------------- 1. deep JSON


@pytest.mark.parametrize("depth", [969, 5000, 100_000])
def test_1_deeply_nested_json_is_a_400(
    live_server: LiveServer, no_tracebacks: pytest.LogCaptureFixture, depth: int
) -> None:
    _assert_refused(_post_raw(live_server, b"[" * depth + b"]" * depth))
    _assert_refused(_post_raw(live_server, b'{"model":' * depth + b"1" + b"}" * depth))
    _assert_no_tracebacks(no_tracebacks)


# -------------------------------------------------------------------------------- 2. huge image number


@pytest.mark.parametrize("digits", [5, 4301, 4980])  # longer prompts are truncated at 5000
def test_2_a_huge_image_number_is_a_400(live_server: LiveServer, digits: int) -> None:
    data = _assert_refused(live_server.submit(_body(prompt=f"[Image {'1' * digits}] walks")))
    assert "[Image" in data["message"] and len(data["message"]) < 300


# -------------------------------------------------------------------------------- 3. lone surrogates


@pytest.mark.parametrize("where", ["prompt", "url", "model"])
def test_3_a_lone_surrogate_is_a_400(live_server: LiveServer, where: str) -> None:
    body = _body()
    if where == "prompt":
        body["input"]["prompt"] = "[Image 1] \ud800 walks"
    elif where == "url":
        body["input"]["media"][0]["url"] = "https://img.example/\udfff.png"
    else:
        body["model"] = "happyhorse-\ud800"
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as the escape \ud800
    assert b"\\ud800" in raw or b"\\udfff" in raw
    _assert_refused(_post_raw(live_server, raw))


# ------------------------------------------------------------------------------------ 5. list paging


@pytest.mark.parametrize(
    "value", ["²", "³", "١", "9223372036854775807", "9" * 5000, "0", "-1", "1e3", " 1", "0x10"]
)
@pytest.mark.parametrize("name", ["page_no", "page_size"])
def test_5_task_list_paging_garbage_is_a_400(live_server: LiveServer, name: str, value: str) -> None:
    r = requests.get(
        f"{live_server.api}/tasks", params={name: value}, headers=live_server.headers(), timeout=30
    )
    _assert_refused(r)


def test_5_large_but_sane_pages_still_work(live_server: LiveServer) -> None:
    r = requests.get(
        f"{live_server.api}/tasks",
        params={"page_no": "100000", "page_size": "1000"},
        headers=live_server.headers(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"] == []


# --------------------------------------------------------------------- 6, 7. signed links, no key needed


def _signed_link(live_server: LiveServer) -> str:
    live_server.storage.put_file("results/probe.mp4", _tiny_file(live_server), "video/mp4")
    return live_server.storage.url_for("results/probe.mp4", int(time.time()) + 3600)


def _tiny_file(live_server: LiveServer):  # type: ignore[no-untyped-def]
    path = live_server.settings.work_dir.parent / "probe.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 64)
    return path


@pytest.mark.parametrize("expires", ["²", "9" * 5000, "-1", "1e10", "١٢٣"])
def test_6_odd_expires_on_a_file_link_is_a_403(live_server: LiveServer, expires: str) -> None:
    link = _signed_link(live_server)
    path, _, query = link.partition("?")
    signature = dict(p.split("=", 1) for p in query.split("&"))["Signature"]
    r = requests.get(path, params={"Expires": expires, "Signature": signature}, timeout=30)
    assert r.status_code == 403, r.text


@pytest.mark.parametrize("signature", ["é", "签名", "\u00ff" * 43, "%FF"])
def test_7_a_non_ascii_signature_is_a_403(live_server: LiveServer, signature: str) -> None:
    link = _signed_link(live_server)
    path, _, query = link.partition("?")
    expires = dict(p.split("=", 1) for p in query.split("&"))["Expires"]
    r = requests.get(path, params={"Expires": expires, "Signature": signature}, timeout=30)
    assert r.status_code == 403, r.text
    r = requests.get(link, timeout=30)
    assert r.status_code == 200  # the real link still works


def _policy(live_server: LiveServer) -> dict:
    r = requests.get(
        f"{live_server.api}/uploads", params={"action": "getPolicy"}, headers=live_server.headers()
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def _upload(
    data: dict, key: str, signature: str | None = None, payload: bytes = b"\x89PNG...."
) -> requests.Response:
    fields = {
        "Signature": signature if signature is not None else data["signature"],
        "policy": data["policy"],
        "key": key,
    }
    return requests.post(data["upload_host"], data=fields, files={"file": ("a.png", payload)}, timeout=30)


@pytest.mark.parametrize("signature", ["é", "签名", "\u00ff" * 44])
def test_7_a_non_ascii_upload_signature_is_a_403(live_server: LiveServer, signature: str) -> None:
    data = _policy(live_server)
    r = _upload(data, data["upload_dir"] + "/a.png", signature=signature)
    assert r.status_code == 403, r.text


# -------------------------------------------------------------------------------- 8. NUL in upload key


@pytest.mark.parametrize("name", ["a\x00.png", "a\x01b.png", "a\nb.png", "\x7f.png"])
def test_8_control_characters_in_an_upload_key_are_a_400(live_server: LiveServer, name: str) -> None:
    data = _policy(live_server)
    r = _upload(data, data["upload_dir"] + "/" + name)
    _assert_refused(r)


def test_raw_socket_garbage_gets_an_answer_not_a_crash(live_server: LiveServer) -> None:
    host, port = live_server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
