"""End to end: one account's flood of submits does not hold up another account's task."""

from __future__ import annotations

from pathlib import Path

import requests

from conftest import ImageServer, LiveServer, make_key, write_image
from test_end_to_end import r2v_body


def test_a_flood_from_one_account_does_not_delay_another(
    live_server: LiveServer, image_server: ImageServer, worker, tmp_path: Path
) -> None:
    write_image(image_server.root / "ref.png", 500, 400)
    body = r2v_body([image_server.url("ref.png")], duration=3, resolution="480P", ratio="1:1")
    flood = [live_server.submit(body).json()["output"]["task_id"] for _ in range(30)]
    other_key = make_key(live_server.store, "other")
    r = live_server.submit(body, key=other_key)
    assert r.status_code == 200, r.text
    other = r.json()["output"]["task_id"]
    accounts = {t.account_id for t in live_server.store.get_many([other, flood[0]]).values()}
    assert len(accounts) == 2
    finished = live_server.wait(other, key=other_key)
    assert finished["output"]["task_status"] == "SUCCEEDED", finished
    still_waiting = sum(1 for t in flood if live_server.query(t)["output"]["task_status"] == "PENDING")
    print(f"\nthe other account's task finished with {still_waiting} of the flood's 30 tasks still PENDING")
    assert still_waiting >= 20  # FIFO would have run all 30 first


def test_queued_tasks_say_how_many_tasks_run_before_them(
    live_server: LiveServer, image_server: ImageServer
) -> None:
    """No worker runs, so the queue stands still: the positions are one claim order across both accounts."""
    write_image(image_server.root / "ref.png", 500, 400)
    body = r2v_body([image_server.url("ref.png")], duration=3, resolution="480P", ratio="1:1")
    flood = [live_server.submit(body).json()["output"]["task_id"] for _ in range(5)]
    other_key = make_key(live_server.store, "other")
    other = live_server.submit(body, key=other_key).json()["output"]["task_id"]
    positions = [live_server.query(t)["output"]["queue_position"] for t in flood]
    other_position = live_server.query(other, key=other_key)["output"]["queue_position"]
    assert other_position <= 1  # one turn each: the flood's oldest task at most goes first
    assert sorted([*positions, other_position]) == list(range(6))
    assert positions == sorted(positions)
    r = requests.post(f"{live_server.api}/tasks/{flood[0]}/cancel", headers=live_server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    canceled = live_server.query(flood[0])["output"]
    assert canceled["task_status"] == "CANCELED" and "queue_position" not in canceled
    assert sorted(
        [*(live_server.query(t)["output"]["queue_position"] for t in flood[1:]),
         live_server.query(other, key=other_key)["output"]["queue_position"]]
    ) == list(range(5))  # fmt: skip
