"""Inline (data:) references live in storage while their task needs them, never in the task's row."""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from pathlib import Path

from conftest import LiveServer, write_image
from test_end_to_end import r2v_body
from videosynth import inputs
from videosynth.inputs import InputSweeper
from videosynth.storage.local import LocalStorage
from videosynth.tasks.sqlite import SqliteTaskStore


def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _recorded_urls(db: Path, task_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT url FROM task_media WHERE task_id=? ORDER BY position", (task_id,))
        return [r[0] for r in rows]


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def _noise_png(path: Path, side: int) -> Path:
    # Random pixels do not compress: a PNG of several MB, like a photo sent inline.
    from PIL import Image

    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path)
    return path


def test_a_data_reference_is_stored_as_an_object_until_its_task_finishes(
    live_server: LiveServer, worker, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "x.png", 500, 400)
    r = live_server.submit(r2v_body([_data_url(image), _data_url(image)], duration=3, ratio="1:1"))
    assert r.status_code == 200, r.text
    task_id = r.json()["output"]["task_id"]
    db = Path(live_server.settings.database_url.removeprefix("sqlite:///"))
    assert _recorded_urls(db, task_id) == ["input://1", "input://2"]
    out = live_server.wait(task_id)["output"]
    assert out["task_status"] == "SUCCEEDED", out
    deadline = time.monotonic() + 30
    while live_server.storage.list_keys(inputs.PREFIX) and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker deletes them just after recording the result
    assert live_server.storage.list_keys(inputs.PREFIX) == []


def test_large_data_references_do_not_grow_the_database(live_server: LiveServer, tmp_path: Path) -> None:
    image = _noise_png(tmp_path / "noise.png", 1400)
    url = _data_url(image)
    assert len(url) > 5_000_000
    db = Path(live_server.settings.database_url.removeprefix("sqlite:///"))
    before = _db_bytes(db)
    for _ in range(4):
        r = live_server.submit(r2v_body([url], duration=3))
        assert r.status_code == 200, r.text
    growth = _db_bytes(db) - before
    print(f"\n4 submits of {len(url) / 1e6:.1f} MB data: URLs grew the database by {growth} bytes")
    assert growth < 1_000_000
    stored = live_server.storage.list_keys(inputs.PREFIX)
    assert len(stored) == 4
    assert live_server.storage.read_bytes(stored[0], 50_000_000) == image.read_bytes()


def test_a_data_reference_that_does_not_decode_is_refused_and_nothing_is_kept(
    live_server: LiveServer, tmp_path: Path
) -> None:
    good = _data_url(write_image(tmp_path / "x.png", 500, 400))
    r = live_server.submit(r2v_body([good, "data:image/png;base64,QUJD*REVG"], duration=3))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "InvalidFile.Format" and r.json()["request_id"]
    assert live_server.storage.list_keys(inputs.PREFIX) == []


def test_clients_cannot_name_an_input(live_server: LiveServer) -> None:
    r = live_server.submit(r2v_body(["input://1"], duration=3))
    assert r.status_code == 400, r.text


def test_housekeeping_sweeps_inputs_of_finished_and_missing_tasks(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "db.sqlite")
    store.migrate()
    storage = LocalStorage(tmp_path / "storage", secret="s", public_url="http://127.0.0.1:1")
    from test_storecalls import new_task

    pending, canceled = new_task("acct-1"), new_task("acct-1")
    store.create_many([pending, canceled])
    assert store.cancel_pending(canceled.task_id, "acct-1", 2000)
    source = write_image(tmp_path / "x.png", 500, 400)
    for task_id in (pending.task_id, canceled.task_id, "no-such-task"):
        storage.put_file(inputs.input_key(task_id, 1), source, "image/png")
    sweeper = InputSweeper()
    assert sweeper.sweep(storage, store) == 1  # the canceled task's; the orphan may be a submit in flight
    assert storage.list_keys(inputs.PREFIX) == sorted(
        [inputs.input_key(pending.task_id, 1), inputs.input_key("no-such-task", 1)]
    )
    assert sweeper.sweep(storage, store) == 1  # seen twice without a task: gone
    assert storage.list_keys(inputs.PREFIX) == [inputs.input_key(pending.task_id, 1)]
    store.close()
