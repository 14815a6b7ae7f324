"""The animatic's promise: the same request and seed give the same frames, byte for byte, every time.

Two ways that promise broke before (see ``videosynth.media.opencv`` and ``videosynth.media.encode``): OpenCV
sent warps and cubic resizes to Intel IPP, whose results depend on the CPU it dispatches to and, for its
tiled warps, on how the thread pool splits a picture while another thread is inside OpenCV; and x264 ran
1.5 threads per core, and its bitstream depends on its thread count. The tests pin both: many renders under
load, renders with IPP dispatched to other instruction sets, and encodes with fewer cores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import pytest

from test_animatic_engine import request, write_refs
from videosynth.engines.animatic import AnimaticEngine, dissolves, parse_shots, schedule
from videosynth.engines.base import GenerationRequest
from videosynth.worker.video import make_video

# Every kind of frame the renderer makes: a push (warpAffine) cut to a pan with a low angle
# (warpPerspective) on the same image, a held close-up (one composed still), and a dissolve between them.
PROMPT = "[Image 1] zoom in, then pan right, low angle. [Image 2] close-up."
RENDERS_UNDER_LOAD = 30


def _request(tmp_path: Path) -> GenerationRequest:
    # 640x640 is not on the size table (the engine does not care), but is large enough that OpenCV splits
    # each warp across its thread pool, and small enough for 30 renders in a few seconds each. 3 s is the
    # least that leaves two shots room for a dissolve after their clean views.
    req = request(write_refs(tmp_path, 2), PROMPT, resolution="720P", ratio="1:1", duration=3, seed=7)
    return dataclasses.replace(req, width=640, height=640)


# The request of the test that first showed the drift (issue 16): at 960x960 OpenCV splits each warp across its
# thread pool, and renders of it under load drifted where the 640x640 request above did not.
DRIFT_PROMPT = "[Image 1] zoom in. [Image 2] pan right."


def _drift_request(tmp_path: Path) -> GenerationRequest:
    return request(write_refs(tmp_path, 2), DRIFT_PROMPT, resolution="720P", ratio="1:1", duration=3, seed=7)


def test_the_request_has_every_kind_of_frame(tmp_path: Path) -> None:
    # Guards the premise of the tests below: a render without a dissolve or a cut could not show them drift.
    req = _request(tmp_path)
    shots = parse_shots(req.prompt, len(req.references))
    slots = schedule(shots, req.num_frames, req.fps)
    assert [(s.shot.image_index, s.shot.move, s.shot.angle, s.shot.framing) for s in slots] == [
        (1, "push_in", None, None),
        (1, "pan_right", "low", None),
        (2, "hold", None, "close_up"),
    ]
    assert len(dissolves(shots, req.num_frames, req.fps)) == 1


def _frame_digests(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [
            hashlib.sha256(f.to_ndarray(format="rgb24").tobytes()).hexdigest()
            for f in container.decode(video=0)
        ]


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """A second process spinning on every core, so the renderer's threads interleave differently each run."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def render(req: GenerationRequest, out: Path) -> None:
    """One render by a fresh engine, as a worker's first task after a start is."""
    make_video(AnimaticEngine(), req, out, lambda done, total, stage=None: None)


# The drift this guards against showed up mostly in a process's first renders (OpenCV's thread pool starts on
# first use, and IPP's tiled warps split a picture by the pool's state): renders in one long-lived process
# usually agreed. So the renders run in several fresh interpreters, a few each.
_STRESS_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from test_determinism import _drift_request, _frame_digests, render
    folder = Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    req = _drift_request(folder)
    for run in range(int(sys.argv[3])):
        out = folder / f"run{run}.mp4"
        render(req, out)
        frames = _frame_digests(out)
        assert len(frames) == req.num_frames, len(frames)
        print(hashlib.sha256("".join(frames).encode()).hexdigest(), hashlib.sha256(out.read_bytes()).hexdigest())
        out.unlink()
    """
)
INTERPRETERS = 6


def test_the_same_request_renders_the_same_frames_under_load(tmp_path: Path, busy_machine: None) -> None:
    per_interpreter = -(-RENDERS_UNDER_LOAD // INTERPRETERS)
    renders: list[tuple[str, str, str]] = []  # (where, frames digest, file digest)
    for n in range(INTERPRETERS):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _STRESS_SCRIPT,
                str(Path(__file__).parent),
                str(tmp_path / f"p{n}"),
                str(per_interpreter),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.split("\n")
        renders += [(f"interpreter {n} render {i}", *line.split()) for i, line in enumerate(lines) if line]
    assert len(renders) >= RENDERS_UNDER_LOAD
    first = renders[0]
    differing_frames = [where for where, frames, _ in renders if frames != first[1]]
    assert differing_frames == [], f"decoded frames differ from {first[0]}'s in: {differing_frames}"
    differing_files = [where for where, _, file in renders if file != first[2]]
    assert differing_files == [], f"same frames, different MP4 bytes from {first[0]}'s in: {differing_files}"


_RENDER_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    import av
    from test_determinism import _frame_digests, _request
    from videosynth.engines.animatic import AnimaticEngine
    from videosynth.worker.video import make_video
    folder = Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    make_video(AnimaticEngine(), _request(folder), folder / "out.mp4", lambda done, total, stage=None: None)
    print(hashlib.sha256("".join(_frame_digests(folder / "out.mp4")).encode()).hexdigest())
    print(hashlib.sha256((folder / "out.mp4").read_bytes()).hexdigest())
    """
)


def _render_elsewhere(
    tmp_path: Path, name: str, env: dict[str, str], cores: set[int] | None = None
) -> list[str]:
    """Render in a fresh interpreter with ``env`` (and, if given, only ``cores``); return frame and file digests."""

    def restrict() -> None:
        if cores is not None:
            os.sched_setaffinity(0, cores)

    done = subprocess.run(
        [sys.executable, "-c", _RENDER_SCRIPT, str(Path(__file__).parent), str(tmp_path / name)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=restrict,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not cv2.ipp.useIPP(), reason="this OpenCV build has no IPP to dispatch")
def test_frames_do_not_depend_on_which_cpu_ipp_dispatches_to(tmp_path: Path) -> None:
    # OPENCV_IPP pins IPP's dispatch to an instruction set, as a machine with only that set would use it.
    results = {
        level: _render_elsewhere(tmp_path, level, {"OPENCV_IPP": level})[0] for level in ("sse42", "avx2")
    }
    results["off"] = _render_elsewhere(tmp_path, "off", {"OPENCV_IPP": "disabled"})[0]
    assert len(set(results.values())) == 1, results


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores"
)
def test_the_video_does_not_depend_on_the_number_of_cores(tmp_path: Path) -> None:
    # x264 sizes its default thread pool from the cores it may run on.
    one_core = _render_elsewhere(tmp_path, "one", {}, cores={min(os.sched_getaffinity(0))})
    all_cores = _render_elsewhere(tmp_path, "all", {})
    assert one_core == all_cores
