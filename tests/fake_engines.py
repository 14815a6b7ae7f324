"""Engines for tests, outside the package: the models file names them as ``fake_engines:Name``."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from videosynth.engines.base import Frames, GenerationRequest, ProgressCallback
from videosynth.engines.options import Option


def _rgb(color: str) -> tuple[int, ...]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


class SolidColorEngine:
    """A frame engine whose frames are all one colour: what a test can recognise in the MP4 that comes back."""

    OPTIONS = (
        Option("color", str, "#00ff00", "the frames' colour, #rrggbb"),
        Option("frames_per_report", int, 24, minimum=1),
        Option("api_key", str, "", secret=True),
    )
    name = "solid"

    def __init__(
        self,
        *,
        color: str,
        frames_per_report: int,
        api_key: str,
        extra_frames: int = 0,
        frame_seconds: float = 0.0,
    ) -> None:
        self.rgb = _rgb(color)
        self.frames_per_report = frames_per_report
        self.extra_frames = extra_frames
        self.frame_seconds = frame_seconds

    def warm_up(self) -> None:
        pass

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        frame = np.empty((request.height, request.width, 3), np.uint8)
        frame[...] = self.rgb
        total = request.num_frames + self.extra_frames

        def frames() -> Iterator[np.ndarray]:
            for i in range(total):
                if i % self.frames_per_report == 0:
                    # From the producer thread: the callback's contract says any thread.
                    on_progress(i, total, "painting")
                if self.frame_seconds:
                    time.sleep(self.frame_seconds)
                yield frame

        return Frames(frames(), stage="painting")


class OddFrameEngine(SolidColorEngine):
    """SolidColorEngine with faults: ``extra_frames`` (negative: fewer) yields the wrong number of frames;
    ``frame_seconds`` makes each frame take that long, so a cancel has a render to stop."""

    OPTIONS = (
        *SolidColorEngine.OPTIONS,
        Option("extra_frames", int, 0),
        Option("frame_seconds", float, 0.0, minimum=0.0),
    )
    name = "odd-frames"


class RelayEngine:
    """A file engine, as a relay to an upstream service is: it writes the MP4 itself (here with PyAV's mpeg4
    encoder, nothing like ours), ``frame_rate`` frames a second for the request's duration, or
    ``container`` other than MP4."""

    OPTIONS = (
        Option("color", str, "#ff0000"),
        Option("frame_rate", int, 0, help="0: the request's"),
        Option("container", str, "mp4", choices=("mp4", "matroska")),
    )
    name = "relay"

    def __init__(self, *, color: str, frame_rate: int, container: str) -> None:
        self.rgb = _rgb(color)
        self.frame_rate = frame_rate
        self.container = container

    def warm_up(self) -> None:
        pass

    def write_video(
        self, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
    ) -> None:
        rate = self.frame_rate or request.fps
        total = request.duration * rate
        on_progress(0, 1, "waiting_upstream")
        frame = np.empty((request.height, request.width, 3), np.uint8)
        frame[...] = self.rgb
        with av.open(str(output_path), "w", format=self.container) as out:
            stream = out.add_stream("mpeg4", rate=rate)
            stream.width, stream.height, stream.pix_fmt = request.width, request.height, "yuv420p"
            for i in range(total):
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
                picture.pts = i
                out.mux(stream.encode(picture))
                on_progress(i + 1, total, "downloading")
            out.mux(stream.encode(None))


class HangingEngine:
    """Stuck, as in a GPU kernel: never reports progress, so a cancel can never reach it."""

    OPTIONS = (Option("hang_seconds", float, 3600.0),)
    name = "hanging"

    def __init__(self, *, hang_seconds: float) -> None:
        self.hang_seconds = hang_seconds

    def warm_up(self) -> None:
        pass

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        time.sleep(self.hang_seconds)
        raise RuntimeError("woke up")


class CrashingEngine:
    """Dies mid-task the way a segfault or the kernel's OOM killer ends a process."""

    OPTIONS = (Option("signal", int, int(signal.SIGKILL)),)
    name = "crashing"

    def __init__(self, *, signal: int) -> None:
        self.signal = signal

    def warm_up(self) -> None:
        pass

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        on_progress(1, request.num_frames)
        os.kill(os.getpid(), self.signal)
        time.sleep(60)
        raise RuntimeError("not killed")


class UnloadableEngine(SolidColorEngine):
    """Cannot load where its weights are missing (the option says so), like a GPU engine on the wrong host."""

    OPTIONS = (*SolidColorEngine.OPTIONS, Option("weights_missing", bool, True))
    name = "unloadable"

    def __init__(self, *, weights_missing: bool, **options: object) -> None:
        if weights_missing:
            raise FileNotFoundError("no weights in /models/missing")
        super().__init__(**options)  # type: ignore[arg-type]


class ShapelessEngine:
    """Neither a frame engine nor a file engine: refused when it is built."""

    OPTIONS = ()
    name = "shapeless"

    def warm_up(self) -> None:
        pass

    def generate(self, request: GenerationRequest, output_path: Path) -> None:
        pass
