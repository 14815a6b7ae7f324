"""Progress that polling clients see: percent done (never decreasing, 100 only at SUCCEEDED) and stage."""

from __future__ import annotations

import time

from conftest import ImageServer, LiveServer, write_image
from test_end_to_end import r2v_body
from videosynth.tasks.models import Stage
from videosynth.worker.loop import PROGRESS_RECORD_EVERY_S, ProgressMeter

# The animatic reports its own stage while its frames are rendered and encoded.
RUNNING_STAGES = {"fetching", "generating", "rendering", "storing"}


def test_a_polling_client_sees_progress_rise_to_100(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "a.png", 800, 600, seed=1)
    write_image(image_server.root / "b.png", 800, 600, seed=2)
    body = r2v_body([image_server.url("a.png"), image_server.url("b.png")], duration=15, resolution="1080P")
    task_id = live_server.submit(body).json()["output"]["task_id"]
    seen: list[tuple[str, int, str | None]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        out = live_server.query(task_id)["output"]
        seen.append((out["task_status"], out["progress"], out.get("stage")))
        assert ("queue_position" in out) == (out["task_status"] == "PENDING"), out
        if out["task_status"] in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.05)
    status, progress, stage = seen[-1]
    assert (status, progress, stage) == ("SUCCEEDED", 100, None), seen[-5:]
    percents = [p for _, p, _ in seen]
    assert percents == sorted(percents), "progress went down"
    assert all(p < 100 for s, p, _ in seen if s != "SUCCEEDED")
    assert all(st == "queued" for s, _, st in seen if s == "PENDING")
    running = [(p, st) for s, p, st in seen if s == "RUNNING"]
    assert running and {st for _, st in running} <= RUNNING_STAGES
    generating = sorted({p for p, st in running if st == "rendering" and 5 < p < 95})
    print(f"\n{len(seen)} polls; RUNNING percents seen while generating: {generating}")
    assert len(generating) >= 2  # a render of several seconds shows its progress, not just start and end


def test_the_meter_records_changes_at_most_once_a_second() -> None:
    meter = ProgressMeter()
    first = meter.news(100.0)
    assert first == (0, Stage.FETCHING)
    meter.recorded(first, 100.0)
    meter.update(Stage.GENERATING, 40)
    assert meter.news(100.0 + PROGRESS_RECORD_EVERY_S / 2) is None  # too soon
    assert meter.news(100.0 + PROGRESS_RECORD_EVERY_S) == (40, Stage.GENERATING)
    meter.update(Stage.GENERATING, 30)  # an engine's late or repeated report never lowers it
    assert meter.news(200.0) == (40, Stage.GENERATING)
    meter.recorded((40, Stage.GENERATING), 200.0)
    assert meter.news(300.0) is None  # nothing new: nothing written
