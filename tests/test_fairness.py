"""End to end: one account's flood of submits does not hold up another account's task."""

from __future__ import annotations

from pathlib import Path

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
