"""The temporary-upload flow (oss://) on the wire, including its refusals."""

from __future__ import annotations

import io
import time

import requests

from conftest import LiveServer, make_key, write_image
from videosynth import uploads


def _policy(live_server: LiveServer, key: str | None = None) -> dict:
    r = requests.get(
        f"{live_server.api}/uploads",
        params={"action": "getPolicy", "model": "happyhorse-1.1-r2v"},
        headers={"Authorization": f"Bearer {key or live_server.key}"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def _post(data: dict, form: dict[str, str], payload: bytes = b"\x89PNG....") -> requests.Response:
    fields = {
        "OSSAccessKeyId": data["oss_access_key_id"],
        "Signature": data["signature"],
        "policy": data["policy"],
        "key": data["upload_dir"] + "/a.png",
        "x-oss-object-acl": data["x_oss_object_acl"],
        "x-oss-forbid-overwrite": data["x_oss_forbid_overwrite"],
        "success_action_status": "200",
        "x-oss-content-type": "image/png",
        **form,
    }
    return requests.post(
        data["upload_host"], data=fields, files={"file": ("a.png", io.BytesIO(payload))}, timeout=30
    )


def test_policy_has_every_key_the_sdk_needs(live_server: LiveServer) -> None:
    data = _policy(live_server)
    needed = {
        "oss_access_key_id",
        "signature",
        "policy",
        "upload_dir",
        "x_oss_object_acl",
        "x_oss_forbid_overwrite",
        "upload_host",
    }
    assert needed <= set(data)
    assert data["upload_host"].startswith(live_server.base_url)
    assert requests.get(f"{live_server.api}/uploads", params={"action": "getPolicy"}).status_code == 401


def test_upload_refusals(live_server: LiveServer) -> None:
    data = _policy(live_server)
    assert _post(data, {"Signature": "AAAA"}).status_code == 403
    assert _post(data, {"key": "elsewhere/a.png"}).status_code == 400
    assert _post(data, {"key": data["upload_dir"] + "/../x.png"}).status_code == 400
    assert _post(data, {}).status_code == 200
    assert _post(data, {}).status_code == 400  # never overwritten
    expired = uploads.issue("other-secret", "acct", time.time() - 1000)
    assert _post({**data, "policy": expired.policy, "signature": expired.signature}, {}).status_code == 403
    assert requests.post(
        data["upload_host"], data=b"garbage", headers={"Content-Type": "multipart/form-data; boundary=x"}
    ).status_code in (400, 403)


def test_oss_key_of_another_account_fails_the_task(live_server: LiveServer, worker, tmp_path) -> None:
    data = _policy(live_server)
    png = write_image(tmp_path / "a.png", 640, 480).read_bytes()
    assert _post(data, {}, png).status_code == 200
    oss = "oss://" + data["upload_dir"] + "/a.png"
    body = {
        "model": "happyhorse-1.1-r2v",
        "input": {"prompt": "[Image 1]", "media": [{"type": "reference_image", "url": oss}]},
        "parameters": {"resolution": "720P", "duration": 3},
    }
    headers = {**live_server.headers(), "X-DashScope-OssResourceResolve": "enable"}
    import requests as rq

    from conftest import SUBMIT_PATH

    mine = rq.post(live_server.base_url + SUBMIT_PATH, json=body, headers=headers).json()["output"]["task_id"]
    assert live_server.wait(mine)["output"]["task_status"] == "SUCCEEDED"
    other = make_key(live_server.store, "other")
    headers_other = {**live_server.headers(other), "X-DashScope-OssResourceResolve": "enable"}
    theirs = rq.post(live_server.base_url + SUBMIT_PATH, json=body, headers=headers_other).json()["output"][
        "task_id"
    ]
    deadline = time.monotonic() + 60
    while True:
        out = live_server.query(theirs, key=other)["output"]
        if out["task_status"] not in ("PENDING", "RUNNING"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (out["task_status"], out["code"]) == ("FAILED", "InvalidURL")
