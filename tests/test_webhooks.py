"""Push instead of poll: signed webhook deliveries (checked with the independent ``standardwebhooks``
package), retries, per-task order, secret rotation, the ``dashscope-event`` envelope, per-task callbacks,
and a delivery that survives a restart of every process. Receivers are real HTTP servers on loopback."""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from conftest import LiveServer, make_key, wait_for, write_image
from test_scale import Deployment
from videosynth.api.hooks import check_endpoint_url
from videosynth.apikeys import display_prefix, hash_key, new_api_key
from videosynth.cli import _webhook_pump
from videosynth.settings import Settings
from videosynth.tasks.models import DeliveryState
from videosynth.tasks.sqlite import SqliteTaskStore
from videosynth.webhooks.schedule import RetrySchedule


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def status(self) -> str:
        """The task status the body reports, in either format."""
        body = self.json
        if "specversion" in body:
            return str(body["data"]["task_status"])
        return str(body["output"]["task_status"])


@dataclass
class Receiver:
    """A webhook receiver on loopback. ``script`` answers successive requests (a status, or "hang": say
    nothing for ``hang_s``); ``answer`` decides the rest from what arrived."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    script: list[int | str] = field(default_factory=list)
    answer: Any = None
    hang_s: float = 3.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_action(self, got: Received) -> int | str:
        with self.lock:
            self.received.append(got)
            if self.script:
                return self.script.pop(0)
        return self.answer(got) if self.answer else 200

    def of(self, status: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.status == status]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            action = rec.next_action(Received({k.lower(): v for k, v in self.headers.items()}, body))
            if action == "hang":
                time.sleep(rec.hang_s)
                action = 200
            try:
                self.send_response(int(action))
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


FAST = {
    "webhook_retry_delays": (0.3, 0.3, 0.3, 0.3),
    "webhook_timeout_seconds": 1.0,
    "webhook_poll_interval": 0.1,
}


@pytest.fixture
def pump(live_server: LiveServer) -> Iterator[None]:
    """The delivery pump a worker process runs, with a short schedule, on its own store connection."""
    from videosynth.wiring import build_store

    settings = live_server.settings.replace(**FAST)
    store = build_store(settings)
    stop = threading.Event()
    thread = _webhook_pump(settings, store, live_server.storage).start(stop)
    yield
    stop.set()
    thread.join(10)
    store.close()


def body_for(image_url: str, duration: int = 3) -> dict[str, Any]:
    return {
        "model": "happyhorse-1.1-r2v",
        "input": {"prompt": "[Image 1] waves.", "media": [{"type": "reference_image", "url": image_url}]},
        "parameters": {"resolution": "480P", "ratio": "16:9", "duration": duration, "watermark": False},
    }


@pytest.fixture
def image_url(image_server: Any, tmp_path: Path) -> str:
    write_image(image_server.root / "ref.png", 640, 480)
    return str(image_server.url("ref.png"))


def api(live: LiveServer, method: str, path: str, key: str | None = None, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key or live.key}", **kw.pop("headers", {})}
    return requests.request(method, f"{live.api}{path}", headers=headers, timeout=30, **kw)


def add_hook(live: LiveServer, url: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
    r = api(live, "POST", "/webhooks", key, json={"url": url, **fields})
    assert r.status_code == 200, r.text
    return dict(r.json()["output"])


def secret_of(live: LiveServer, key: str | None = None) -> str:
    r = api(live, "GET", "/webhooks/secret", key)
    assert r.status_code == 200, r.text
    secret = str(r.json()["output"]["secret"])
    assert secret.startswith("whsec_")
    return secret


def verified(secret: str, got: Received) -> bool:
    try:
        StandardWebhook(secret).verify(got.body, got.headers)
    except WebhookVerificationError:
        return False
    return True


def submit(live: LiveServer, body: dict[str, Any], **headers: str) -> str:
    r = requests.post(
        live.base_url + "/api/v1/services/aigc/video-generation/video-synthesis",
        json=body,
        headers=live.headers(**headers),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["task_id"])


def test_deliveries_are_signed_retried_in_order_and_recorded(
    live_server: LiveServer, worker: Any, pump: None, receiver: Receiver, image_url: str
) -> None:
    hook = add_hook(live_server, receiver.url)
    assert hook["events"] == ["running", "succeeded", "failed", "canceled"] and hook["format"] == "standard"
    secret = secret_of(live_server)
    # The running event: a 500, then no answer within the timeout, then accepted. The succeeded event waits
    # behind it (per-task order), then goes through at once.
    receiver.script = [500, "hang", 200]
    task_id = submit(live_server, body_for(image_url))
    final = live_server.wait(task_id)
    assert final["output"]["task_status"] == "SUCCEEDED"
    wait_for("the succeeded event", lambda: receiver.of("SUCCEEDED"), timeout=60)
    got = list(receiver.received)
    assert [r.status for r in got] == ["RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"]
    assert all(verified(secret, r) for r in got)
    assert not verified("whsec_" + "A" * 32, got[0])
    assert len({r.headers["webhook-id"] for r in got[:3]}) == 1  # one id for every try of one event
    assert got[3].headers["webhook-id"] != got[0].headers["webhook-id"]
    assert got[0].headers["content-type"] == "application/json"
    assert got[3].headers["videosynth-event"] == "task.succeeded"
    # The body is the query answer (its request_id is the submit's, the same on every try).
    pushed = got[3].json
    assert pushed["output"] == final["output"] and pushed["usage"] == final["usage"]
    assert pushed["output"]["video_url"] and requests.get(pushed["output"]["video_url"], timeout=30).ok
    assert got[0].json["output"]["task_status"] == "RUNNING" and "video_url" not in got[0].json["output"]
    assert got[0].body == got[1].body == got[2].body

    r = api(live_server, "GET", f"/tasks/{task_id}/deliveries")
    assert r.status_code == 200, r.text
    deliveries = r.json()["output"]["deliveries"]
    assert [(d["event"], d["status"], d["attempts"]) for d in deliveries] == [
        ("running", "delivered", 3),
        ("succeeded", "delivered", 1),
    ]
    log = deliveries[0]["attempt_log"]
    assert [a["status_code"] for a in log] == [500, None, 200]
    assert log[0]["error"] == "HTTP 500" and "timed out" in log[1]["error"] and log[2]["error"] is None
    assert deliveries[0]["delivery_id"] == got[0].headers["webhook-id"]
    assert deliveries[0]["webhook_id"] == hook["webhook_id"]

    # A manual redeliver: the same id again, recorded as one more attempt.
    r = api(live_server, "POST", f"/tasks/{task_id}/deliveries/{deliveries[1]['delivery_id']}/redeliver")
    assert r.status_code == 200, r.text
    wait_for("the redelivery", lambda: len(receiver.of("SUCCEEDED")) == 2, timeout=30)
    again = receiver.of("SUCCEEDED")[1]
    assert again.headers["webhook-id"] == deliveries[1]["delivery_id"] and verified(secret, again)
    wait_for(
        "the redelivery recorded",
        lambda: (
            api(live_server, "GET", f"/tasks/{task_id}/deliveries").json()["output"]["deliveries"][1][
                "attempts"
            ]
            == 2
        ),
    )
    # Another account sees none of it.
    other = make_key(live_server.store, "other")
    assert api(live_server, "GET", f"/tasks/{task_id}/deliveries", other).status_code == 404
    r = api(
        live_server, "POST", f"/tasks/{task_id}/deliveries/{deliveries[1]['delivery_id']}/redeliver", other
    )
    assert r.status_code == 404 and r.json()["code"] == "NotFound" and r.json()["request_id"]


def test_a_delivery_given_up_is_failed_and_later_ones_go_on(
    live_server: LiveServer, worker: Any, pump: None, receiver: Receiver, image_url: str
) -> None:
    add_hook(live_server, receiver.url)
    receiver.answer = lambda got: 503 if got.status == "RUNNING" else 200
    task_id = submit(live_server, body_for(image_url))
    live_server.wait(task_id)
    wait_for("the succeeded event", lambda: receiver.of("SUCCEEDED"), timeout=60)
    assert len(receiver.of("RUNNING")) == len(FAST["webhook_retry_delays"]) + 1  # type: ignore[arg-type]
    deliveries = api(live_server, "GET", f"/tasks/{task_id}/deliveries").json()["output"]["deliveries"]
    assert [(d["event"], d["status"]) for d in deliveries] == [
        ("running", "failed"),
        ("succeeded", "delivered"),
    ]
    assert "next_attempt_time" not in deliveries[0]


def test_secret_rotation_signs_with_both_during_the_overlap(
    live_server: LiveServer, worker: Any, pump: None, receiver: Receiver, image_url: str
) -> None:
    add_hook(live_server, receiver.url, events=["succeeded"])
    old = secret_of(live_server)
    assert secret_of(live_server) == old
    task_id = submit(live_server, body_for(image_url))
    live_server.wait(task_id)
    wait_for("the first delivery", lambda: len(receiver.received) == 1, timeout=60)
    r = api(live_server, "POST", "/webhooks/secret/rotate", json={"overlap_seconds": 3600})
    assert r.status_code == 200, r.text
    rotated = r.json()["output"]
    new = rotated["secret"]
    assert new != old and rotated["previous_secret"] == old and rotated["previous_secret_expires_at"]
    delivery_id = receiver.received[0].headers["webhook-id"]

    def redeliver_and_get(n: int) -> Received:
        time.sleep(1.1)  # the pumps remember secrets for a second
        r = api(live_server, "POST", f"/tasks/{task_id}/deliveries/{delivery_id}/redeliver")
        assert r.status_code == 200, r.text
        wait_for("the redelivery", lambda: len(receiver.received) == n, timeout=30)
        return receiver.received[n - 1]

    during = redeliver_and_get(2)
    assert verified(old, during) and verified(new, during)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    r = api(live_server, "POST", "/webhooks/secret/rotate", json={"overlap_seconds": 0})
    newest = r.json()["output"]["secret"]
    assert "previous_secret" not in r.json()["output"]
    after = redeliver_and_get(3)
    assert verified(newest, after) and not verified(new, after) and not verified(old, after)
    assert verified(old, receiver.received[0])


def test_the_dashscope_event_envelope(
    live_server: LiveServer, worker: Any, pump: None, receiver: Receiver, image_url: str
) -> None:
    hook = add_hook(live_server, receiver.url, format="dashscope-event")
    assert hook["events"] == ["succeeded", "failed", "canceled"]
    lean = add_hook(live_server, receiver.url + "?lean", format="dashscope-event", include_result=False)
    assert lean["include_result"] is False
    secret = secret_of(live_server)
    task_id = submit(live_server, body_for(image_url))
    final = live_server.wait(task_id)
    wait_for("both events", lambda: len(receiver.received) == 2, timeout=60)
    full, short = sorted(receiver.received, key=lambda r: "output_result" not in r.json["data"])
    assert full.headers["content-type"] == "application/cloudevents+json"
    event = full.json
    assert event["specversion"] == "1.0" and event["type"] == "dashscope:System:AsyncTaskFinish"
    assert event["source"] == "acs.dashscope" and event["id"] == full.headers["webhook-id"]
    assert event["subject"] == task_id and event["datacontenttype"] == "application/json"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", event["time"])
    data = event["data"]
    assert data["task_id"] == task_id and data["task_status"] == "SUCCEEDED"
    for name in ("start_time", "end_time"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", data[name]), data[name]
    assert final["output"]["end_time"].startswith(data["end_time"])
    assert data["request_id"] and data["api_key_id"] and data["region"] == "local"
    assert data["user_api_unique_key"].endswith(":happyhorse-1.1-r2v")
    assert data["contain_result"] is True
    assert data["output_result"]["output"] == final["output"]
    assert data["output_result"]["usage"] == final["usage"]
    assert short.json["data"]["contain_result"] is False and "output_result" not in short.json["data"]
    assert verified(secret, full) and verified(secret, short)


def test_a_tasks_own_callback_url(
    live_server: LiveServer, worker: Any, pump: None, receiver: Receiver, image_url: str
) -> None:
    task_id = submit(live_server, body_for(image_url), **{"X-Videosynth-Callback-Url": receiver.url})
    live_server.wait(task_id)
    wait_for("both events", lambda: len(receiver.received) == 2, timeout=60)
    assert [r.status for r in receiver.received] == ["RUNNING", "SUCCEEDED"]
    assert all(verified(secret_of(live_server), r) for r in receiver.received)
    deliveries = api(live_server, "GET", f"/tasks/{task_id}/deliveries").json()["output"]["deliveries"]
    assert [(d["webhook_id"], d["url"]) for d in deliveries] == [(None, receiver.url)] * 2
    # A task without the header tells no one.
    other = submit(live_server, body_for(image_url))
    live_server.wait(other)
    assert api(live_server, "GET", f"/tasks/{other}/deliveries").json()["output"]["deliveries"] == []
    for bad in ("ftp://example.com/x", "not a url", "http://user:pw@example.com/"):
        r = requests.post(
            live_server.base_url + "/api/v1/services/aigc/video-generation/video-synthesis",
            json=body_for(image_url),
            headers=live_server.headers(**{"X-Videosynth-Callback-Url": bad}),
            timeout=30,
        )
        assert r.status_code == 400 and r.json()["code"] == "InvalidParameter", r.text


def test_the_default_schedule_tries_ten_times_over_about_a_day() -> None:
    schedule = RetrySchedule()
    delays = [schedule.next_delay_s(n, rand=lambda: 0.5) for n in range(1, 11)]
    assert delays[-1] is None and all(d is not None for d in delays[:-1])
    assert 22 * 3600 <= sum(d for d in delays if d is not None) <= 26 * 3600
    for n in range(1, 10):
        base = schedule.delays_s[n - 1]
        low, high = schedule.next_delay_s(n, rand=lambda: 0.0), schedule.next_delay_s(n, rand=lambda: 1.0)
        assert low == pytest.approx(base * 0.8) and high == pytest.approx(base * 1.2)
    assert schedule.next_delay_s(0) is None


def test_endpoint_urls_obey_the_private_address_rule() -> None:
    strict = Settings()
    for url in (
        "http://10.0.0.1/hook",
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:192.168.1.1]/",
    ):
        with pytest.raises(Exception, match="not a public address"):
            check_endpoint_url(url, strict)
    # Names are checked at every connect (they may resolve anywhere later); public literals pass.
    assert check_endpoint_url("https://hooks.example.com/x", strict) == "https://hooks.example.com/x"
    assert check_endpoint_url("http://8.8.8.8/x", strict) == "http://8.8.8.8/x"
    assert check_endpoint_url("http://127.0.0.1/x", strict.replace(media_allow_private=True))


def test_the_webhooks_resource(live_server: LiveServer) -> None:
    hook = add_hook(live_server, "https://hooks.example.com/a", events=["failed", "running", "failed"])
    assert hook["events"] == ["running", "failed"] and hook["webhook_id"].startswith("wh_")
    listed = api(live_server, "GET", "/webhooks").json()["output"]["webhooks"]
    assert [h["webhook_id"] for h in listed] == [hook["webhook_id"]]
    other = make_key(live_server.store, "other")
    assert api(live_server, "GET", "/webhooks", other).json()["output"]["webhooks"] == []
    assert api(live_server, "DELETE", f"/webhooks/{hook['webhook_id']}", other).status_code == 404
    assert secret_of(live_server, other) != secret_of(live_server)
    for bad in (
        {"url": "ftp://x.example/"},
        {"url": "https://x.example/", "format": "xml"},
        {"url": "https://x.example/", "format": {}},
        {"url": "https://x.example/", "events": ["started"]},
        {"url": "https://x.example/", "events": []},
        {"url": "https://x.example/", "format": "dashscope-event", "events": ["running"]},
        {"url": "https://x.example/", "include_result": False},
        {"url": 5},
    ):
        r = api(live_server, "POST", "/webhooks", json=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["code"] == "InvalidParameter" and r.json()["message"] and r.json()["request_id"]
    r = api(live_server, "POST", "/webhooks", data=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = api(live_server, "POST", "/webhooks/secret/rotate", json={"overlap_seconds": -1})
    assert r.status_code == 400
    assert requests.get(f"{live_server.api}/webhooks", timeout=30).status_code == 401
    for n in range(19):
        add_hook(live_server, f"https://hooks.example.com/{n}")
    r = api(live_server, "POST", "/webhooks", json={"url": "https://hooks.example.com/21"})
    assert r.status_code == 400 and "at most 20" in r.json()["message"]
    r = api(live_server, "DELETE", f"/webhooks/{hook['webhook_id']}")
    assert r.status_code == 200 and r.json()["output"]["deleted"] is True
    assert api(live_server, "DELETE", f"/webhooks/{hook['webhook_id']}").status_code == 404
    assert api(live_server, "GET", "/tasks/nope/deliveries").status_code == 404


def test_a_delivery_survives_a_restart_of_every_process(
    tmp_path: Path, image_server: Any, receiver: Receiver
) -> None:
    """The receiver fails the succeeded event; every process (API and its worker) stops while that delivery
    waits for its retry; after the restart the same delivery (same webhook-id) is made."""
    write_image(image_server.root / "ref.png", 640, 480)
    env = {
        **os.environ,
        "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
        "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
        "VIDEOSYNTH_DRAIN_SECONDS": "0.2",
        "VIDEOSYNTH_WEBHOOK_RETRY_DELAYS": "4,4,4,4",
        "VIDEOSYNTH_WEBHOOK_POLL_INTERVAL": "0.2",
        "VIDEOSYNTH_WEBHOOK_TIMEOUT": "2",
    }
    store = SqliteTaskStore(tmp_path / "db.sqlite")
    store.migrate()
    key = new_api_key()
    store.create_key("restart", hash_key(key), display_prefix(key), int(time.time() * 1000))
    failing = threading.Event()
    failing.set()
    receiver.answer = lambda got: 500 if got.status == "SUCCEEDED" and failing.is_set() else 200
    dep = Deployment(env=env, tmp=tmp_path, key=key)
    try:
        dep.start_api(workers=1)
        headers = {"Authorization": f"Bearer {key}"}
        r = requests.post(
            f"{dep.base_url}/api/v1/webhooks", json={"url": receiver.url}, headers=headers, timeout=30
        )
        assert r.status_code == 200, r.text
        task_id = dep.submit([image_server.url("ref.png")])
        wait_for("the first try of the succeeded event", lambda: receiver.of("SUCCEEDED"), timeout=120)
        dep.stop_all(signal.SIGTERM)
        (waiting,) = [
            d
            for d in store.task_deliveries(task_id, store.get(task_id).account_id)
            if d.event.kind == "succeeded"
        ]  # type: ignore[union-attr]
        assert waiting.state is DeliveryState.PENDING and waiting.attempts == 1
        first_id = receiver.of("SUCCEEDED")[0].headers["webhook-id"]
        assert waiting.delivery_id == first_id
        failing.clear()
        dep.start_api(workers=1)
        wait_for("the delivery after the restart", lambda: len(receiver.of("SUCCEEDED")) == 2, timeout=60)
        assert receiver.of("SUCCEEDED")[1].headers["webhook-id"] == first_id
        secret = requests.get(f"{dep.base_url}/api/v1/webhooks/secret", headers=headers, timeout=30).json()
        assert verified(secret["output"]["secret"], receiver.of("SUCCEEDED")[1])

        def delivered() -> bool:
            r = requests.get(f"{dep.base_url}/api/v1/tasks/{task_id}/deliveries", headers=headers, timeout=30)
            return [(d["event"], d["status"], d["attempts"]) for d in r.json()["output"]["deliveries"]] == [
                ("running", "delivered", 1),
                ("succeeded", "delivered", 2),
            ]

        wait_for("both recorded as delivered", delivered, timeout=30)
    finally:
        dep.stop_all(signal.SIGKILL)
        store.close()
