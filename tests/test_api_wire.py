"""The synchronous wire: every applicable error row of the wire note, and the success shapes."""

from __future__ import annotations

import re
import time

import pytest
import requests

from conftest import SUBMIT_PATH, LiveServer, make_key

IMG = "https://img.example/a.png"  # never fetched: no worker runs in these tests


def body(**overrides: object) -> dict:
    b: dict = {
        "model": "happyhorse-1.1-r2v",
        "input": {"prompt": "[Image 1] walks", "media": [{"type": "reference_image", "url": IMG}]},
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5},
    }
    b.update(overrides)
    return b


def with_input(**changes: object) -> dict:
    b = body()
    b["input"] = {**b["input"], **changes}
    return b


def with_params(**changes: object) -> dict:
    b = body()
    b["parameters"] = {**b["parameters"], **changes}
    return b


def assert_error(r: requests.Response, status: int, code: str, message: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["code"] == code, data
    assert isinstance(data["message"], str) and data["message"]
    assert re.fullmatch(r"[0-9a-f-]{36}", data["request_id"])
    assert r.headers["x-request-id"] == data["request_id"]
    if message is not None:
        assert message in data["message"], data["message"]
    return data


def test_submit_success_shape(live_server: LiveServer) -> None:
    r = live_server.submit(body())
    assert r.status_code == 200
    data = r.json()
    assert set(data) == {"output", "request_id"}
    assert data["output"]["task_status"] == "PENDING"
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", data["output"]["task_id"]
    )
    assert r.headers["x-request-id"] == data["request_id"]


def test_missing_api_key(live_server: LiveServer) -> None:
    r = requests.post(
        live_server.base_url + SUBMIT_PATH, json=body(), headers={"X-DashScope-Async": "enable"}
    )
    assert_error(r, 401, "InvalidApiKey", "No API-key provided.")


def test_invalid_api_key(live_server: LiveServer) -> None:
    assert_error(live_server.submit(body(), key="sk-nope"), 401, "InvalidApiKey", "Invalid API-key provided.")


def test_revoked_key_is_refused(live_server: LiveServer) -> None:
    key = make_key(live_server.store, "short-lived")
    assert live_server.submit(body(), key=key).status_code == 200
    keys = [k for k in live_server.store.list_keys() if k.name == "short-lived"]
    assert live_server.store.revoke_key(keys[0].key_id, 0)
    # Found keys are trusted for KEY_TTL_S (1 s; tests/test_auth.py pins it with a clock); the margin is
    # for a loaded machine.
    deadline = time.monotonic() + 5
    while (r := live_server.submit(body(), key=key)).status_code == 200:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)
    assert_error(r, 401, "InvalidApiKey")


def test_missing_async_header(live_server: LiveServer) -> None:
    r = requests.post(
        live_server.base_url + SUBMIT_PATH,
        json=body(),
        headers={"Authorization": f"Bearer {live_server.key}"},
    )
    assert_error(r, 403, "AccessDenied", "current user api does not support synchronous calls.")


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"text"', b"null"])
def test_body_not_a_json_object(live_server: LiveServer, raw: bytes) -> None:
    r = requests.post(
        live_server.base_url + SUBMIT_PATH,
        data=raw,
        headers={**live_server.headers(), "Content-Type": "application/json"},
    )
    assert_error(r, 400, "InvalidParameter", "Required body invalid")


def test_unknown_model(live_server: LiveServer) -> None:
    assert_error(live_server.submit(body(model="wan9.9-r2v")), 400, "InvalidParameter", "Model not exist.")


@pytest.mark.parametrize(
    "payload",
    [
        {k: v for k, v in body().items() if k != "model"},
        body(model=7),
        body(input="text"),
        {k: v for k, v in body().items() if k != "input"},
    ],
)
def test_missing_or_invalid_required(live_server: LiveServer, payload: dict) -> None:
    assert_error(live_server.submit(payload), 400, "InvalidParameter", "missing or invalid")


@pytest.mark.parametrize("prompt", [None, "", "   ", 42])
def test_missing_prompt(live_server: LiveServer, prompt: object) -> None:
    assert_error(live_server.submit(with_input(prompt=prompt)), 400, "InvalidParameter", "input.prompt")


@pytest.mark.parametrize("media", [None, [], "x", {"type": "reference_image", "url": IMG}])
def test_media_missing_or_empty(live_server: LiveServer, media: object) -> None:
    assert_error(live_server.submit(with_input(media=media)), 400, "InvalidParameter", "input.media")


def test_media_more_than_nine(live_server: LiveServer) -> None:
    media = [{"type": "reference_image", "url": IMG}] * 10
    assert_error(live_server.submit(with_input(media=media)), 400, "InvalidParameter", "at most 9")


def test_nine_media_accepted(live_server: LiveServer) -> None:
    media = [{"type": "reference_image", "url": IMG}] * 9
    assert live_server.submit(with_input(media=media, prompt="[Image 9] and [Image 1]")).status_code == 200


@pytest.mark.parametrize("kind", ["reference_video", "first_frame", None, 3])
def test_wrong_media_type(live_server: LiveServer, kind: object) -> None:
    media = [{"type": kind, "url": IMG}]
    assert_error(live_server.submit(with_input(media=media)), 400, "InvalidParameter", "reference_image")


@pytest.mark.parametrize("url", ["ftp://x/a.png", "file:///etc/passwd", "/tmp/a.png", "javascript:alert(1)"])
def test_bad_url_scheme(live_server: LiveServer, url: str) -> None:
    media = [{"type": "reference_image", "url": url}]
    assert_error(
        live_server.submit(with_input(media=media)),
        400,
        "invalid_parameter_error",
        "The provided URL does not appear to be valid",
    )


def test_oss_url_needs_resolve_header(live_server: LiveServer) -> None:
    media = [{"type": "reference_image", "url": "oss://dashscope-instant/abc/x.png"}]
    assert_error(live_server.submit(with_input(media=media)), 400, "invalid_parameter_error")


@pytest.mark.parametrize(
    "url", ["data:image/gif;base64,R0lGOD", "data:text/plain;base64,aGk=", "data:image/png,raw"]
)
def test_data_url_wrong_mime(live_server: LiveServer, url: str) -> None:
    media = [{"type": "reference_image", "url": url}]
    assert_error(live_server.submit(with_input(media=media)), 400, "InvalidParameter", "data URL")


def test_missing_url(live_server: LiveServer) -> None:
    assert_error(
        live_server.submit(with_input(media=[{"type": "reference_image"}])), 400, "InvalidParameter", "url"
    )


@pytest.mark.parametrize("prompt", ["[Image 2] walks", "[Image 1] meets [image 3]", "[Image 0] waits"])
def test_prompt_names_missing_image(live_server: LiveServer, prompt: str) -> None:
    assert_error(live_server.submit(with_input(prompt=prompt)), 400, "InvalidParameter", "reference image(s)")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"resolution": "240P"}, "resolution"),
        ({"resolution": 720}, "resolution"),
        ({"ratio": "2:1"}, "ratio"),
        ({"ratio": "16x9"}, "ratio"),
        ({"duration": 2}, "duration"),
        ({"duration": 16}, "duration"),
        ({"duration": "5"}, "duration"),
        ({"duration": 5.5}, "duration"),
        ({"duration": True}, "duration"),
        ({"seed": -1}, "seed"),
        ({"seed": 2147483648}, "seed"),
        ({"seed": "1"}, "seed"),
        ({"watermark": "yes"}, "watermark"),
    ],
)
def test_bad_enum_or_range(live_server: LiveServer, params: dict, field: str) -> None:
    assert_error(live_server.submit(with_params(**params)), 400, "InvalidParameter", field)


def test_parameters_not_an_object(live_server: LiveServer) -> None:
    assert_error(live_server.submit(body(parameters=[1])), 400, "InvalidParameter", "parameters")


def test_defaults_and_boundaries(live_server: LiveServer) -> None:
    b = body()
    del b["parameters"]
    r = live_server.submit(b)
    assert r.status_code == 200
    task = live_server.store.get(r.json()["output"]["task_id"])
    assert task is not None
    assert (task.params.resolution, task.params.ratio, task.params.duration, task.params.watermark) == (
        "1080P",
        "16:9",
        5,
        True,
    )
    assert (task.params.width, task.params.height) == (1920, 1080)
    for d in (3, 15, 5.0):
        assert live_server.submit(with_params(duration=d)).status_code == 200
    r = live_server.submit(with_params(seed=2147483647, watermark=False, ratio="21:9"))
    task = live_server.store.get(r.json()["output"]["task_id"])
    assert task is not None and task.params.seed == 2147483647 and task.params.watermark is False
    assert (task.params.width, task.params.height) == (1472, 624)


def test_unknown_fields_ignored(live_server: LiveServer) -> None:
    b = with_input(extend_prompt=True, function="video-synthesis", negative_prompt="x")
    b["parameters"].update({"audio": True, "size": "1280*720", "prompt_extend": False})
    b["input"]["media"][0]["reference_description"] = "a hat"
    b["extra_top"] = {"a": 1}
    assert live_server.submit(b).status_code == 200


def test_charset_content_type_accepted(live_server: LiveServer) -> None:
    import json

    r = requests.post(
        live_server.base_url + SUBMIT_PATH,
        data=json.dumps(body(), ensure_ascii=False).encode(),
        headers={**live_server.headers(), "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200


def test_long_prompt_truncated(live_server: LiveServer) -> None:
    english = "[Image 1] " + "a" * 6000
    r = live_server.submit(with_input(prompt=english))
    assert r.status_code == 200
    out = live_server.query(r.json()["output"]["task_id"])["output"]
    assert len(out["orig_prompt"]) == 5000
    chinese = "[Image 1]" + "马" * 3000
    r = live_server.submit(with_input(prompt=chinese))
    out = live_server.query(r.json()["output"]["task_id"])["output"]
    assert out["orig_prompt"].startswith("[Image 1]")
    # 9 ASCII characters + CJK characters counted double against 5000.
    assert len(out["orig_prompt"]) == 9 + (5000 - 9) // 2


def test_query_pending_shape_and_times(live_server: LiveServer) -> None:
    task_id = live_server.submit(body()).json()["output"]["task_id"]
    data = live_server.query(task_id)
    assert data["output"]["task_id"] == task_id
    assert data["output"]["task_status"] == "PENDING"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", data["output"]["submit_time"])
    assert "usage" not in data and "video_url" not in data["output"]
    assert "code" not in data


def test_query_unknown_and_other_account(live_server: LiveServer) -> None:
    for task_id in ("5f0c4d1e-0000-4000-8000-000000000000", "not-a-uuid"):
        data = live_server.query(task_id)
        assert data["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    task_id = live_server.submit(body()).json()["output"]["task_id"]
    other = make_key(live_server.store, "other")
    assert live_server.query(task_id, key=other)["output"]["task_status"] == "UNKNOWN"
    assert live_server.query(task_id)["output"]["task_status"] == "PENDING"


def test_query_needs_key(live_server: LiveServer) -> None:
    r = requests.get(f"{live_server.api}/tasks/abc")
    assert_error(r, 401, "InvalidApiKey")


def test_cancel(live_server: LiveServer) -> None:
    task_id = live_server.submit(body()).json()["output"]["task_id"]
    other = make_key(live_server.store, "other")
    url = f"{live_server.api}/tasks/{task_id}/cancel"
    r = requests.post(url, headers={"Authorization": f"Bearer {other}"})
    assert_error(r, 400, "UnsupportedOperation", "PENDING")
    # The SDK sends no body and no Content-Type.
    r = requests.post(url, headers={"Authorization": f"Bearer {live_server.key}"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"request_id"}
    out = live_server.query(task_id)["output"]
    assert out["task_status"] == "CANCELED" and "end_time" in out
    r = requests.post(url, headers={"Authorization": f"Bearer {live_server.key}"})
    assert_error(
        r,
        400,
        "UnsupportedOperation",
        "Failed to cancel the task, please confirm if the task is in PENDING status.",
    )
    r = requests.post(
        f"{live_server.api}/tasks/unknown-id/cancel", headers={"Authorization": f"Bearer {live_server.key}"}
    )
    assert_error(r, 400, "UnsupportedOperation")


def test_list_paging_and_filters(live_server: LiveServer) -> None:
    ids = [live_server.submit(body()).json()["output"]["task_id"] for _ in range(5)]
    other = make_key(live_server.store, "other")
    live_server.submit(body(), key=other)
    requests.post(
        f"{live_server.api}/tasks/{ids[0]}/cancel", headers={"Authorization": f"Bearer {live_server.key}"}
    )
    auth = {"Authorization": f"Bearer {live_server.key}"}
    for path in ("/tasks", "/tasks/"):
        r = requests.get(f"{live_server.api}{path}", params={"page_no": 1, "page_size": 2}, headers=auth)
        assert r.status_code == 200
        data = r.json()
        assert {"request_id", "total", "total_page", "page_no", "page_size", "data"} <= set(data)
        assert "output" not in data
        assert (data["total"], data["total_page"], data["page_no"], data["page_size"]) == (5, 3, 1, 2)
        assert len(data["data"]) == 2
    entry = data["data"][0]
    assert entry["model_name"] == "happyhorse-1.1-r2v"
    assert isinstance(entry["gmt_create"], int) and entry["task_id"] in ids
    r = requests.get(f"{live_server.api}/tasks", params={"page_no": 3, "page_size": 2}, headers=auth)
    assert len(r.json()["data"]) == 1
    r = requests.get(f"{live_server.api}/tasks", params={"status": "CANCELED"}, headers=auth)
    assert [e["task_id"] for e in r.json()["data"]] == [ids[0]]
    assert "end_time" in r.json()["data"][0]
    r = requests.get(f"{live_server.api}/tasks", params={"task_id": ids[2]}, headers=auth)
    assert r.json()["total"] == 1
    r = requests.get(f"{live_server.api}/tasks", params={"model_name": "happyhorse-1.0-r2v"}, headers=auth)
    assert r.json()["total"] == 0
    r = requests.get(
        f"{live_server.api}/tasks",
        params={"start_time": "20200101000000", "end_time": "20200101120000"},
        headers=auth,
    )
    assert r.json()["total"] == 0
    assert_error(
        requests.get(f"{live_server.api}/tasks", params={"status": "DONE"}, headers=auth),
        400,
        "InvalidParameter",
    )
    assert_error(
        requests.get(f"{live_server.api}/tasks", params={"page_no": "0"}, headers=auth),
        400,
        "InvalidParameter",
    )
    assert_error(
        requests.get(f"{live_server.api}/tasks", params={"start_time": "yesterday"}, headers=auth),
        400,
        "InvalidParameter",
    )


def test_unknown_route_is_json(live_server: LiveServer) -> None:
    r = requests.get(f"{live_server.api}/nope", headers={"Authorization": f"Bearer {live_server.key}"})
    assert_error(r, 404, "NotFound")
    r = requests.get(live_server.base_url + SUBMIT_PATH, headers=live_server.headers())
    assert_error(r, 405, "MethodNotAllowed")


def test_models_endpoint(live_server: LiveServer) -> None:
    data = requests.get(f"{live_server.api}/models").json()
    names = {m["model"] for m in data["data"]}
    assert names == {"happyhorse-1.0-r2v", "happyhorse-1.1-r2v"}
    model = data["data"][0]
    assert model["engine"] == "animatic"
    assert model["references"] == {"min": 1, "max": 9}
    assert model["durations"] == list(range(3, 16))
    assert len(model["sizes"]) == 27
    assert {"resolution": "480P", "ratio": "16:9", "width": 832, "height": 480} in model["sizes"]
    assert {"resolution": "720P", "ratio": "16:9", "width": 1280, "height": 720} in model["sizes"]
