"""``GET /api/v1/events``: the account's task events as Server-Sent Events, resumable with ``Last-Event-ID``
on any API process. Two API processes on one PostgreSQL database, a worker behind one of them."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from conftest import LiveServer, write_image
from test_scale import Deployment
from videosynth.apikeys import display_prefix, hash_key, new_api_key
from videosynth.tasks.models import TaskStatus
from videosynth.tasks.postgres import PostgresTaskStore


@dataclass(frozen=True)
class Frame:
    id: int
    event: str
    data: dict[str, Any]


def frames(response: requests.Response) -> Iterator[Frame]:
    """The events of a text/event-stream, as an EventSource reads them (comments skipped)."""
    fields: dict[str, str] = {}
    for raw in response.iter_lines(decode_unicode=True):
        if raw == "":
            if "data" in fields:
                yield Frame(int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
            continue
        if raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def read_until(response: requests.Response, seen: list[Frame], done: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for frame in frames(response):
        seen.append(frame)
        if done():
            return
        assert time.monotonic() < deadline, f"stream did not deliver in {timeout} s: {seen}"


def stream(base_url: str, key: str, last_event_id: int | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    r = requests.get(f"{base_url}/api/v1/events", headers=headers, stream=True, timeout=(5, 30))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return r


def test_a_resumed_stream_on_another_api_process_misses_nothing_and_repeats_nothing(
    tmp_path: Path, pg_url: str, image_server: Any
) -> None:
    write_image(image_server.root / "ref.png", 640, 480)
    images = [image_server.url("ref.png")]
    env = {
        **os.environ,
        "VIDEOSYNTH_DATABASE_URL": pg_url,
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
        "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
        "VIDEOSYNTH_DRAIN_SECONDS": "0.2",
    }
    store = PostgresTaskStore(pg_url)
    store.migrate()
    key = new_api_key()
    account = store.create_key("sse", hash_key(key), display_prefix(key), int(time.time() * 1000)).account_id
    first_api = Deployment(env=dict(env), tmp=tmp_path, key=key)
    second_api = Deployment(env=dict(env), tmp=tmp_path, key=key)
    try:
        first_api.start_api(workers=1)
        second_api.start_api(workers=0)
        seen: list[Frame] = []
        connection = stream(first_api.base_url, key)
        ids = [second_api.submit(images) for _ in range(2)]
        read_until(connection, seen, lambda: len(seen) >= 3)
        connection.close()
        # Disconnected: more tasks run and finish meanwhile.
        ids += [first_api.submit(images) for _ in range(2)]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            tasks = store.get_many(ids)
            if all(t.status is TaskStatus.SUCCEEDED for t in tasks.values()):
                break
            time.sleep(0.2)
        expected = [(e.seq, e.task_id, e.kind.value) for e in store.events_after(account, 0, 1000)]
        assert len(expected) == 8  # running and succeeded, four times
        resumed = stream(second_api.base_url, key, last_event_id=seen[-1].id)
        read_until(resumed, seen, lambda: len(seen) >= len(expected))
        resumed.close()
        got = [(f.id, f.data["output"]["task_id"], f.event.removeprefix("task.")) for f in seen]
        assert got == expected
        for frame in seen:
            assert frame.data["output"]["task_status"].lower() == frame.event.removeprefix("task.")
        last = seen[-1].data
        answer = second_api.status(last["output"]["task_id"])
        assert last["output"] == answer["output"] and last["usage"] == answer["usage"]

        # Without Last-Event-ID a stream starts at now: nothing old comes again.
        fresh = stream(second_api.base_url, key)
        newest: list[Frame] = []
        another = first_api.submit(images)
        read_until(fresh, newest, lambda: len(newest) >= 2)
        fresh.close()
        assert [(f.data["output"]["task_id"], f.event) for f in newest] == [
            (another, "task.running"),
            (another, "task.succeeded"),
        ]
        assert newest[0].id > seen[-1].id
    finally:
        for dep in (first_api, second_api):
            dep.stop_all(signal.SIGKILL)
        store.close()


def test_the_stream_refuses_what_it_cannot_resume(live_server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {live_server.key}"}
    for bad in ("abc", "-1", "1" * 30, "\u00b2"):
        r = requests.get(f"{live_server.api}/events", headers={**headers, "Last-Event-ID": bad}, timeout=30)
        assert r.status_code == 400 and r.json()["code"] == "InvalidParameter", r.text
    r = requests.get(f"{live_server.api}/events", timeout=30)
    assert r.status_code == 401 and r.json()["code"] == "InvalidApiKey"
    # A first connect may resume by query parameter too (EventSource cannot set headers).
    r = requests.get(f"{live_server.api}/events?last_event_id=0", headers=headers, stream=True, timeout=30)
    assert r.status_code == 200
    assert next(r.iter_lines(decode_unicode=True)).startswith(":")
    r.close()
