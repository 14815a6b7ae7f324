"""The dashscope relay end to end: two real videosynth deployments on loopback, B (animatic) the upstream of
A (relay), driven by curl and the dashscope SDK, with B failing, throttling, dying, and A's worker killed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dashscope
import pytest
import requests
from dashscope import VideoSynthesis

from conftest import ImageServer, write_image
from relay_env import UPSTREAM_KEY_ENV, FaultProxy, Node, relay_models_file, start_image_server
from videosynth.tasks.models import TaskFilter, TaskStatus

SEED_PROMPT = (
    "[Image 1]中身着红色旗袍的女性站在老上海的街头，[Image 2]中的折扇在她手中缓缓打开，"
    "[Image 3]中的流苏耳坠随着她转头轻轻摇晃。"
)


class Pair:
    def __init__(self, root: Path) -> None:
        self.b = Node(root, "b")
        self.proxy = FaultProxy(self.b.port)
        models = relay_models_file(root / "a-models.toml", self.b.port, self.proxy.port)
        self.a = Node(
            root,
            "a",
            {
                "VIDEOSYNTH_MODELS_FILE": str(models),
                UPSTREAM_KEY_ENV: self.b.key,
                "VIDEOSYNTH_LEASE_SECONDS": "3",
            },
        )
        self.b.serve(workers=1)
        self.a.serve(workers=0)
        self.a_worker = self.a.worker()
        self.answers: list[str] = []  # every body A answered, to look for B's secrets in

    def logs(self) -> str:
        return f"=== A\n{self.a.logs()}\n=== B\n{self.b.logs()}"

    def submit(self, body: dict) -> str:
        r = requests.post(
            self.a.live().api + "/services/aigc/video-generation/video-synthesis",
            json=body,
            headers=self.a.live().headers(),
            timeout=10,
        )
        self.answers.append(r.text)
        assert r.status_code == 200, r.text
        return str(r.json()["output"]["task_id"])

    def query(self, task_id: str) -> dict:
        r = requests.get(f"{self.a.live().api}/tasks/{task_id}", headers=self.a.live().headers(), timeout=10)
        self.answers.append(r.text)
        return dict(r.json())

    def wait(self, task_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.query(task_id)
            if answer["output"]["task_status"] in ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"):
                return answer
            time.sleep(0.2)
        raise AssertionError(f"{task_id} did not finish: {answer}\n{self.logs()}")

    def b_tasks(self) -> list:
        return self.b.store.list(self.b.store.list_keys()[0].account_id, TaskFilter(), 0, 1000)[1]

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()
        self.proxy.stop()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(tmp_path_factory.mktemp("relay"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    server, httpd = start_image_server(tmp_path_factory.mktemp("relay-images"))
    yield server
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def refs(images: ImageServer) -> list[str]:
    urls = []
    for i, (fmt, ext) in enumerate([("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")]):
        write_image(images.root / f"ref{i}.{ext}", 640 + 40 * i, 480, seed=i, fmt=fmt)
        urls.append(images.url(f"ref{i}.{ext}"))
    return urls


def body(
    urls: list[str], model: str = "happyhorse-1.1-r2v", prompt: str = SEED_PROMPT, **params: object
) -> dict:
    return {
        "model": model,
        "input": {"prompt": prompt, "media": [{"type": "reference_image", "url": u} for u in urls]},
        "parameters": {"resolution": "720P", "ratio": "16:9", "duration": 5, "watermark": True, **params},
    }


def curl(*args: str) -> str:
    return subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, check=True
    ).stdout


def test_the_seed_request_relays_by_curl_and_a_keeps_its_own_copy(
    pair: Pair, refs: list[str], tmp_path: Path
) -> None:
    a = pair.a.live()
    b_before = {t.task_id for t in pair.b_tasks()}
    submitted = curl(
        "-X", "POST", a.api + "/services/aigc/video-generation/video-synthesis",
        "-H", "X-DashScope-Async: enable", "-H", f"Authorization: Bearer {a.key}",
        "-H", "Content-Type: application/json", "-d", json.dumps(body(refs)),
    )  # fmt: skip
    pair.answers.append(submitted)
    task_id = json.loads(submitted)["output"]["task_id"]
    stages = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = curl(f"{a.api}/tasks/{task_id}", "-H", f"Authorization: Bearer {a.key}")
        pair.answers.append(text)
        out = json.loads(text)["output"]
        stages.add(out.get("stage"))
        if out["task_status"] in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.1)
    answer = json.loads(text)
    assert out["task_status"] == "SUCCEEDED", (answer, pair.logs())
    assert out["video_url"].startswith(pair.a.base_url + "/files/results/")
    assert answer["usage"]["duration"] == 5 and answer["usage"]["SR"] == 720
    assert stages & {"upstream_queued", "upstream_running"}, stages
    mp4 = tmp_path / "a.mp4"
    curl("-o", str(mp4), out["video_url"])
    assert mp4.read_bytes()[4:8] == b"ftyp"

    # B ran exactly one task for it; A remembers B's id privately, and says it nowhere.
    b_new = [t for t in pair.b_tasks() if t.task_id not in b_before]
    assert len(b_new) == 1 and b_new[0].status is TaskStatus.SUCCEEDED
    a_task = pair.a.store.get(task_id)
    assert a_task is not None and b_new[0].task_id in (a_task.engine_state or "")
    pair.answers.append(curl(f"{a.api}/tasks?page_size=100", "-H", f"Authorization: Bearer {a.key}"))
    for text in pair.answers:
        assert b_new[0].task_id not in text and pair.b.key not in text

    # B's copy gone (B's link expires in 24 h anyway): A's link still serves A's own.
    assert b_new[0].result_key is not None
    pair.b.storage.delete(b_new[0].result_key)
    b_link = pair.b.live().query(b_new[0].task_id)["output"]["video_url"]
    assert requests.get(b_link, timeout=10).status_code == 404
    again = requests.get(out["video_url"], timeout=30)
    assert again.status_code == 200 and again.content == mp4.read_bytes()


def test_the_sdk_relays_v1_and_v2_and_uploads_local_files_through_a(
    pair: Pair, refs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashscope, "base_http_api_url", pair.a.live().api)
    rsp = VideoSynthesis.async_call(
        api_key=pair.a.key,
        model="happyhorse-1.1-r2v",
        prompt=SEED_PROMPT,
        media=[{"type": "reference_image", "url": u} for u in refs],
        resolution="720P",
        ratio="16:9",
        duration=5,
        watermark=True,
    )
    assert rsp.status_code == 200, rsp
    result = VideoSynthesis.wait(rsp, api_key=pair.a.key)
    assert result.output.task_status == "SUCCEEDED", (result, pair.logs())
    assert result.output.video_url.startswith(pair.a.base_url) and result.usage.duration == 5

    # The v2 style too.
    client = dashscope.Client(api_key=pair.a.key, base_url=pair.a.live().api)
    job = client.videos.jobs.create(
        model="happyhorse-1.1-r2v",
        prompt="[Image 1] close-up.",
        media=[{"type": "reference_image", "url": refs[0]}],
        resolution="480P",
        duration=3,
    )
    done = client.videos.jobs.wait(job, poll_interval=0.2, max_interval=0.5, timeout=120)
    assert done.status == "SUCCEEDED", (done, pair.logs())
    assert done.video_url and done.video_url.startswith(pair.a.base_url)

    # Local files: the SDK uploads them to A (oss://); A sends them on inline (data:) or, for relay-upload,
    # through B's own upload flow.
    local = tmp_path / "local.png"
    write_image(local, 640, 480, seed=9, fmt="PNG")
    for model in ("happyhorse-1.0-r2v", "relay-upload"):
        rsp = VideoSynthesis.async_call(
            api_key=pair.a.key,
            model=model,
            prompt="[Image 1] close-up, push in.",
            media=[{"type": "reference_image", "url": f"file://{local}"}],
            resolution="480P",
            duration=3,
        )
        assert rsp.status_code == 200, rsp
        result = VideoSynthesis.wait(rsp, api_key=pair.a.key)
        assert result.output.task_status == "SUCCEEDED", (model, result, pair.logs())
    uploaded_to_b = [k for k in _keys(pair.b.root / "storage") if k.startswith("uploads/")]
    assert any(k.endswith("local.png") for k in uploaded_to_b), uploaded_to_b


def _keys(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def test_b_failing_throttling_and_failing_the_task(pair: Pair, refs: list[str], images: ImageServer) -> None:
    small = {"resolution": "480P", "duration": 3}
    # B answering 500 for a while: the tasks finish once it recovers.
    pair.proxy.mode = "500"
    erroring = [pair.submit(body(refs[:1], prompt="[Image 1] walks", **small)) for _ in range(2)]
    time.sleep(3)
    assert pair.proxy.seen.get("500", 0) >= 2
    pair.proxy.mode = "pass"
    for task_id in erroring:
        assert pair.wait(task_id)["output"]["task_status"] == "SUCCEEDED", pair.logs()

    # B answering 429: slower, never failed.
    pair.proxy.mode = "429"
    throttled = [pair.submit(body(refs[:1], prompt="[Image 1] turns", **small)) for _ in range(3)]
    time.sleep(3)
    seen_429 = pair.proxy.seen.get("429", 0)
    assert seen_429 >= 3
    pair.proxy.mode = "pass"
    for task_id in throttled:
        assert pair.wait(task_id)["output"]["task_status"] == "SUCCEEDED", pair.logs()

    # B failing the task: A reports B's code and message.
    missing = images.url("no-such-image.png")
    task_id = pair.submit(body([missing], prompt="[Image 1] walks", **small))
    out = pair.wait(task_id)["output"]
    assert out["task_status"] == "FAILED"
    b_failed = [t for t in pair.b_tasks() if t.status is TaskStatus.FAILED]
    assert b_failed
    b_out = pair.b.live().query(b_failed[-1].task_id)["output"]
    assert (out["code"], out["message"]) == (b_out["code"], b_out["message"])
    assert "usage" not in pair.query(task_id)


def _wait_for_stage(pair: Pair, task_id: str, stage: str) -> None:
    deadline = time.monotonic() + 30
    while (out := pair.query(task_id)["output"]).get("stage") != stage:
        assert time.monotonic() < deadline, out
        time.sleep(0.05)


def test_cancel_of_a_task_waiting_upstream_cancels_it_there(pair: Pair, refs: list[str]) -> None:
    # A long render first, so the next task waits in B's queue (B has one worker).
    long_task = pair.submit(body(refs, model="happyhorse-1.0-r2v", resolution="1080P", duration=15))
    _wait_for_stage(pair, long_task, "upstream_running")
    waiting = pair.submit(body(refs[:1], model="happyhorse-1.0-r2v", prompt="[Image 1] waits", duration=3))
    _wait_for_stage(pair, waiting, "upstream_queued")
    r = requests.post(
        f"{pair.a.live().api}/tasks/{waiting}/cancel", headers=pair.a.live().headers(), timeout=10
    )
    assert r.status_code == 200, r.text
    assert pair.wait(waiting, timeout=30)["output"]["task_status"] == "CANCELED"
    a_task = pair.a.store.get(waiting)
    assert a_task is not None
    b_id = json.loads(a_task.engine_state or "{}")["reference"]
    b_task = pair.b.store.get(b_id)
    assert b_task is not None and b_task.status is TaskStatus.CANCELED
    assert pair.wait(long_task, timeout=180)["output"]["task_status"] == "SUCCEEDED"


def _sent_upstream(pair: Pair, task_id: str) -> bool:
    task = pair.a.store.get(task_id)
    return task is not None and "reference" in (task.engine_state or "")


def test_b_killed_and_restarted_with_tasks_in_flight(pair: Pair, refs: list[str]) -> None:
    tasks = [
        pair.submit(body(refs[:1], model="happyhorse-1.0-r2v", prompt=f"[Image 1] scene {i}", duration=3))
        for i in range(3)
    ]
    # Wait until B holds all three (A recorded B's task id). Waiting for all three to show an upstream stage
    # at once raced: on a slow machine the first can finish upstream before the third is sent.
    deadline = time.monotonic() + 60
    while not all(_sent_upstream(pair, task_id) for task_id in tasks):
        assert time.monotonic() < deadline, pair.logs()
        time.sleep(0.05)
    pair.b.kill_server()
    time.sleep(3)  # A polls a dead upstream meanwhile
    pair.b.serve(workers=1)
    for task_id in tasks:
        assert pair.wait(task_id, timeout=120)["output"]["task_status"] == "SUCCEEDED", pair.logs()


def test_a_worker_killed_mid_poll_resumes_and_b_holds_one_task(pair: Pair, refs: list[str]) -> None:
    before = len(pair.b_tasks())
    long_task = pair.submit(body(refs, model="happyhorse-1.0-r2v", resolution="1080P", duration=10))
    deadline = time.monotonic() + 30
    while True:
        a_task = pair.a.store.get(long_task)
        if a_task is not None and "reference" in (a_task.engine_state or ""):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pair.a_worker.send_signal(signal.SIGKILL)
    pair.a_worker.wait()
    pair.a_worker = pair.a.worker()
    answer = pair.wait(long_task, timeout=180)
    assert answer["output"]["task_status"] == "SUCCEEDED", pair.logs()
    a_task = pair.a.store.get(long_task)
    assert a_task is not None and a_task.attempts == 2  # the first attempt's lease ran out
    assert len(pair.b_tasks()) == before + 1


def test_a_submit_whose_answer_was_lost_is_never_sent_twice(pair: Pair, refs: list[str]) -> None:
    before = len(pair.b_tasks())
    pair.proxy.mode = "lose-submit"
    task_id = pair.submit(body(refs[:1], prompt="[Image 1] lost", resolution="480P", duration=3))
    out = pair.wait(task_id)["output"]
    # B created a task A cannot tell apart from any other client's: A fails it rather than submit again.
    assert pair.proxy.mode == "pass"
    assert out["task_status"] == "FAILED" and out["code"] == "InternalError.UpstreamSubmitLost", out
    assert len(pair.b_tasks()) == before + 1


def test_a_submit_that_never_arrived_is_found_missing_and_sent_again(pair: Pair, refs: list[str]) -> None:
    before = len(pair.b_tasks())
    time.sleep(0.5)  # no other task of B's in the window the relay looks at
    pair.proxy.mode = "drop-submit"
    task_id = pair.submit(body(refs[:1], prompt="[Image 1] dropped", resolution="480P", duration=3))
    out = pair.wait(task_id)["output"]
    assert pair.proxy.mode == "pass"
    assert out["task_status"] == "SUCCEEDED", (out, pair.logs())
    assert len(pair.b_tasks()) == before + 1
