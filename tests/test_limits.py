"""Per-client limits and idempotent submits, through a real server (and two, sharing PostgreSQL)."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import os
import sqlite3
import threading
import time
from pathlib import Path

import dashscope
import numpy as np
import pytest
import requests
from PIL import Image

from conftest import SUBMIT_PATH, LiveServer
from services import PostgresCluster, fresh_database
from test_scale import Deployment
from videosynth.apikeys import display_prefix, hash_key, new_api_key
from videosynth.tasks.models import Limits, TaskFilter
from videosynth.tasks.postgres import PostgresTaskStore
from videosynth.tasks.store import TaskStore

IMG = "https://img.example/a.png"  # never fetched: no worker runs in these tests


def body(prompt: str = "[Image 1] walks") -> dict:
    return {
        "model": "happyhorse-1.1-r2v",
        "input": {"prompt": prompt, "media": [{"type": "reference_image", "url": IMG}]},
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5},
    }


def limited_key(store: TaskStore, limits: Limits, name: str = "limited") -> str:
    key = new_api_key()
    store.create_key(name, hash_key(key), display_prefix(key), int(time.time() * 1000), limits)
    return key


def at_start_of_a_second() -> None:
    """Wait for a fresh one-second window, so a burst that takes well under a second falls in one window."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def post(base_url: str, key: str, payload: dict, **headers: str) -> requests.Response:
    return requests.post(
        base_url + SUBMIT_PATH,
        json=payload,
        headers={"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable", **headers},
        timeout=30,
    )


def tasks_of(store: TaskStore, account_key: str) -> int:
    found = store.find_key(hash_key(account_key))
    assert found is not None
    total, _ = store.list(found.account_id, TaskFilter(), 0, 1)
    return total


def assert_throttled(r: requests.Response, code: str) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["code"] == code and r.json()["message"] and r.json()["request_id"]
    assert int(r.headers["retry-after"]) >= 1
    # Worth retrying (after Retry-After): SDK v2 does, unless told not to.
    assert "x-should-retry" not in r.headers


def test_the_sixth_submit_within_a_second_is_throttled(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits(submit_rps=5))
    at_start_of_a_second()
    answers = [post(live_server.base_url, key, body()) for _ in range(6)]
    assert [r.status_code for r in answers[:5]] == [200] * 5, answers[-1].text
    assert_throttled(answers[5], "Throttling.RateQuota")
    assert tasks_of(live_server.store, key) == 5
    # The next window admits submits again.
    at_start_of_a_second()
    assert post(live_server.base_url, key, body()).status_code == 200


def test_queries_have_their_own_rate(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits(query_rps=20))
    task_id = post(live_server.base_url, key, body()).json()["output"]["task_id"]
    at_start_of_a_second()
    answers = [
        requests.get(
            f"{live_server.api}/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        for _ in range(21)
    ]
    assert [r.status_code for r in answers[:20]] == [200] * 20
    assert_throttled(answers[20], "Throttling.RateQuota")
    # Submits are counted apart from queries.
    assert post(live_server.base_url, key, body()).status_code == 200


def test_the_501st_queued_task_is_refused(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits(max_queued=500))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(live_server.base_url, key, body()).status_code, range(500)))
    assert answers == [200] * 500
    assert_throttled(post(live_server.base_url, key, body()), "Throttling.AllocationQuota")
    assert tasks_of(live_server.store, key) == 500
    # A task that leaves the queue makes room for one more.
    task = live_server.store.claim("w", int(time.time() * 1000), 30_000)
    assert task is not None
    assert post(live_server.base_url, key, body()).status_code == 200
    assert post(live_server.base_url, key, body()).status_code == 429


def test_zero_switches_a_limit_off_and_accounts_set_limits_for_their_keys(live_server: LiveServer) -> None:
    store = live_server.store
    key = limited_key(store, Limits(submit_rps=0))
    at_start_of_a_second()
    assert all(post(live_server.base_url, key, body()).status_code == 200 for _ in range(8))
    # An account's limit holds for all its keys together; a key's own limit overrides it.
    found = store.find_key(hash_key(key))
    assert found is not None
    assert store.update_limits(found.key_id, {"submit_rps": None}, on_account=False)
    assert store.update_limits(found.key_id, {"submit_rps": 2}, on_account=True)
    time.sleep(1.1)  # the API trusts a key it found for a second
    at_start_of_a_second()
    codes = [post(live_server.base_url, key, body()).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_models_list_shows_the_effective_limits(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits(submit_rps=3, max_queued=0))
    mine = requests.get(f"{live_server.api}/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert mine.json()["limits"] == {"submit_rps": 3, "query_rps": 0, "max_queued": 0, "max_stored_mb": 0}
    anyone = requests.get(f"{live_server.api}/models", timeout=30).json()
    assert anyone["limits"]["submit_rps"] == 0  # the tests' server runs with the defaults off


def noise_png_data_url(side: int, seed: int) -> str:
    """A PNG of random pixels (it does not compress): about 3 * side * side bytes."""
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_kept_references_and_uploads_count_against_a_stored_bytes_quota(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits(max_stored_mb=1))
    inline = body()
    inline["input"]["media"] = [{"type": "reference_image", "url": noise_png_data_url(350, 1)}]  # ~360 KB
    first = post(live_server.base_url, key, inline)
    assert first.status_code == 200, first.text
    inline["input"]["media"][0]["url"] = noise_png_data_url(350, 2)
    assert post(live_server.base_url, key, inline).status_code == 200
    inline["input"]["media"][0]["url"] = noise_png_data_url(350, 3)
    full = post(live_server.base_url, key, inline)
    assert_throttled(full, "Throttling.AllocationQuota")
    assert "quota is 1 MB" in full.json()["message"]
    # URLs are not kept here: still fine.
    assert post(live_server.base_url, key, body()).status_code == 200
    # A new upload policy is refused only once the quota is full; uploads count too.
    policy = requests.get(
        f"{live_server.api}/uploads",
        params={"action": "getPolicy"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert policy.status_code == 200
    data = policy.json()["data"]
    upload = requests.post(
        data["upload_host"],
        data={
            "OSSAccessKeyId": data["oss_access_key_id"],
            "Signature": data["signature"],
            "policy": data["policy"],
            "key": data["upload_dir"] + "/a.png",
            "success_action_status": "200",
        },
        files={"file": ("a.png", io.BytesIO(b"\x89PNG" + bytes(400_000)))},
        timeout=30,
    )
    assert upload.status_code == 200, upload.text
    refused = requests.get(
        f"{live_server.api}/uploads",
        params={"action": "getPolicy"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert_throttled(refused, "Throttling.AllocationQuota")
    # A finished task's references are no longer kept: their bytes count no more.
    found = live_server.store.find_key(hash_key(key))
    assert found is not None
    assert live_server.store.cancel_pending(first.json()["output"]["task_id"], found.account_id, 1)
    inline["input"]["media"][0]["url"] = noise_png_data_url(200, 4)  # ~120 KB
    assert post(live_server.base_url, key, inline).status_code == 200


# --- two API processes sharing one PostgreSQL -------------------------------------------------------------


def test_the_submit_rate_holds_across_api_replicas(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    url = fresh_database(pg_cluster)
    store = PostgresTaskStore(url)
    store.migrate()
    key = new_api_key()
    store.create_key("shared", hash_key(key), display_prefix(key), int(time.time() * 1000))
    env = {
        "VIDEOSYNTH_DATABASE_URL": url,
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
        # The server's defaults, as an operator would set them.
        "VIDEOSYNTH_SUBMIT_RPS": "5",
        "VIDEOSYNTH_QUERY_RPS": "20",
    }
    first = Deployment(env={**os.environ, **env}, tmp=tmp_path, key=key)
    second = Deployment(env={**os.environ, **env}, tmp=tmp_path, key=key)
    try:
        first.start_api()
        second.start_api()
        at_start_of_a_second()
        answers = [post((first, second)[i % 2].base_url, key, body()) for i in range(6)]
        assert sorted(r.status_code for r in answers) == [200] * 5 + [429]
        assert_throttled(next(r for r in answers if r.status_code == 429), "Throttling.RateQuota")
        assert tasks_of(store, key) == 5
    finally:
        first.stop_all()
        second.stop_all()
        store.close()


# --- idempotent submits ------------------------------------------------------------------------------------


def test_an_idempotency_key_returns_the_first_answer(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits(submit_rps=1))
    first = post(live_server.base_url, key, body(), **{"Idempotency-Key": "order-42"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    task_id = first.json()["output"]["task_id"]
    # Replays are answered even past the rate limit: the task exists, its submit is never refused now.
    for _ in range(3):
        again = post(live_server.base_url, key, body(), **{"Idempotency-Key": "order-42"})
        assert again.status_code == 200, again.text
        assert again.json()["output"] == {"task_id": task_id, "task_status": "PENDING"}
        assert again.headers["idempotent-replayed"] == "true"
    assert tasks_of(live_server.store, key) == 1


def test_an_idempotency_key_reused_for_another_body_is_a_conflict(live_server: LiveServer) -> None:
    key = live_server.key
    assert (
        post(live_server.base_url, key, body("[Image 1] walks"), **{"Idempotency-Key": "k-1"}).status_code
        == 200
    )
    r = post(live_server.base_url, key, body("[Image 1] runs"), **{"Idempotency-Key": "k-1"})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "InvalidParameter.IdempotencyKey"
    assert r.headers["x-should-retry"] == "false"
    # The same JSON in another key order is the same request.
    reordered = body("[Image 1] walks")
    reordered = {
        "parameters": reordered["parameters"],
        "input": reordered["input"],
        "model": reordered["model"],
    }
    assert post(live_server.base_url, key, reordered, **{"Idempotency-Key": "k-1"}).status_code == 200
    # Keys are per account: another account's k-1 is its own.
    other = limited_key(live_server.store, Limits())
    assert (
        post(live_server.base_url, other, body("[Image 1] runs"), **{"Idempotency-Key": "k-1"}).status_code
        == 200
    )


@pytest.mark.parametrize("bad", ["", "x" * 256, "naïve"])
def test_a_malformed_idempotency_key_is_refused(live_server: LiveServer, bad: str) -> None:
    r = requests.post(
        live_server.base_url + SUBMIT_PATH,
        json=body(),
        headers={**live_server.headers(), "Idempotency-Key": bad.encode("utf-8").decode("latin-1")},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameter", r.text
    assert "Idempotency-Key" in r.json()["message"]


def test_concurrent_submits_with_one_idempotency_key_create_one_task(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: post(live_server.base_url, key, body(), **{"Idempotency-Key": "same"}), range(16)
            )
        )
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["output"]["task_id"] for r in answers}) == 1
    assert tasks_of(live_server.store, key) == 1


def test_deliberate_identical_submits_of_one_sdk_session_are_separate_tasks(live_server: LiveServer) -> None:
    key = limited_key(live_server.store, Limits())
    session = {"x-dashscope-sdk-session-id": "session-1"}
    ids = {post(live_server.base_url, key, body(), **session).json()["output"]["task_id"] for _ in range(3)}
    assert len(ids) == 3


def test_an_sdk_v2_submit_retried_after_a_timeout_creates_one_task(live_server: LiveServer) -> None:
    """The store stalls (its write lock held elsewhere) past the SDK's timeout: the SDK gives up on its
    submit and sends it again, twice. The first try still creates the task; its retries get that task."""
    key = limited_key(live_server.store, Limits())
    db = live_server.settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_later() -> None:
        time.sleep(2.5)
        blocker.execute("COMMIT")
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    client = dashscope.Client(api_key=key, base_url=live_server.api, timeout=1.0, max_retries=3)
    job = client.videos.jobs.create(
        model="happyhorse-1.1-r2v",
        prompt="[Image 1] walks",
        media=[{"type": "reference_image", "url": IMG}],
        resolution="720P",
        ratio="16:9",
        duration=5,
    )
    assert released.is_set()  # the answer came after the stall: at least one try timed out
    blocker.close()
    found = live_server.store.find_key(hash_key(key))
    assert found is not None
    total, tasks = live_server.store.list(found.account_id, TaskFilter(), 0, 10)
    assert total == 1
    assert tasks[0].task_id == job.task_id
