"""The engine seam: one Protocol, one method.

An engine turns a :class:`GenerationRequest` into an MP4 file. It knows nothing about tasks, stores or
storage. Engines run in the worker's engine process (see ``videosynth.worker.host``), never in the API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ProgressCallback = Callable[[int, int], None]
"""``on_progress(done, total)``: called at least once a second while generating. It may raise
:class:`videosynth.errors.Canceled`; the engine must let that propagate and leave no partial output."""


@dataclass(frozen=True)
class ReferenceImage:
    """One reference image, ``[Image {index}]`` in the prompt (1-based).

    The worker has checked its format (magic bytes and header), size and pixel count, but has not decoded
    its pixels: an engine that cannot decode it raises :func:`videosynth.media.validate.decode_failure`
    (``InvalidImageFormat``), so the task fails with the same error as any other bad image.
    """

    index: int
    path: Path
    width: int
    height: int
    format: str = "JPEG"  # "JPEG" | "PNG" | "WEBP", from the magic bytes


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    references: tuple[ReferenceImage, ...]
    resolution: str  # "480P" | "720P" | "1080P"
    ratio: str  # one of videosynth.sizes.RATIOS
    width: int
    height: int
    duration: int  # seconds
    fps: int
    seed: int
    watermark: bool

    @property
    def num_frames(self) -> int:
        return self.duration * self.fps


@dataclass(frozen=True)
class GenerationResult:
    """What the engine wrote to ``output_path``."""

    frames: int
    duration: float  # seconds of video written


class Engine(Protocol):
    """Builds once (loading weights if any), then generates many times."""

    name: str

    def generate(
        self, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
    ) -> GenerationResult:
        """Write an H.264 MP4 for ``request`` to ``output_path``."""
        ...

    def warm_up(self) -> None:
        """Exercise the generation path once, cheaply, before the first task (the engine process calls
        it after building the engine). The first call of a code path pays for lazy imports, library
        initialisation and caches; without this the first task after a start pays for them."""
        ...
