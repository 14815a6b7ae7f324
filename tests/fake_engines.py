"""Engines for tests, outside the package: the models file names them as ``fake_engines:Name``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from videosynth.engines.base import GenerationRequest, GenerationResult, ProgressCallback
from videosynth.engines.options import Option
from videosynth.media.encode import encode_frames


class SolidColorEngine:
    """Every frame one colour: what a test can recognise in the MP4 that comes back."""

    OPTIONS = (
        Option("color", str, "#00ff00", "the frames' colour, #rrggbb"),
        Option("frames_per_report", int, 24, minimum=1),
        Option("api_key", str, "", secret=True),
    )
    name = "solid"

    def __init__(self, *, color: str, frames_per_report: int, api_key: str) -> None:
        self.rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        self.frames_per_report = frames_per_report

    def warm_up(self) -> None:
        pass

    def generate(
        self, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
    ) -> GenerationResult:
        total = request.num_frames
        frame = np.empty((request.height, request.width, 3), np.uint8)
        frame[...] = self.rgb

        def on_frame(i: int) -> None:
            if i % self.frames_per_report == 0:
                on_progress(i, total)

        written = encode_frames((frame for _ in range(total)), output_path, request.width, request.height,
                                request.fps, on_frame=on_frame)  # fmt: skip
        return GenerationResult(frames=written, duration=written / request.fps)


class HangingEngine:
    """Stuck, as in a GPU kernel: never reports progress, so a cancel can never reach it."""

    OPTIONS = (Option("hang_seconds", float, 3600.0),)
    name = "hanging"

    def __init__(self, *, hang_seconds: float) -> None:
        self.hang_seconds = hang_seconds

    def warm_up(self) -> None:
        pass

    def generate(
        self, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
    ) -> GenerationResult:
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

    def generate(
        self, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
    ) -> GenerationResult:
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
