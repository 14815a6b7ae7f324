"""The engine seam: two shapes of engine behind one progress contract.

An engine turns a :class:`GenerationRequest` into a video. It knows nothing about tasks, stores or storage.
Engines run in the worker's engine process (``videosynth.worker.host``), never in the API, in one of two
shapes:

* a :class:`FrameEngine` hands back :class:`Frames` (RGB arrays, optionally with per-frame picture hints) and
  the engine process encodes them (``videosynth.worker.video``). The H.264 settings, the faststart layout
  and the exact frame count (``request.num_frames``) are the worker's, in one place, for every such engine.
  Frames are consumed on a producer thread while the previous ones are encoded, so an engine that yields
  them lazily renders and encodes at once.
* a :class:`FileEngine` writes an MP4 itself (a relay that downloads one from an upstream service); the
  engine process then checks it is an MP4 with the request's frame count or duration.

Both report progress through one :class:`ProgressCallback`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:  # the API imports this module (via the registry): it must not pull in numpy and PyAV
    import numpy as np

    from videosynth.media.encode import PictureHint


class ProgressCallback(Protocol):
    """``on_progress(done, total, stage=None)``: ``done`` of ``total`` steps of ``stage``.

    ``stage`` is a short lowercase word the task shows while it lasts (``"denoising"``, ``"decoding"``;
    None: ``"generating"``); ``done`` counts the steps of that stage, so it may start again at 0 when the
    stage changes (the percent a client sees never goes down). Call it at least once a second while
    working, from any thread: it is where a stop arrives, by raising :class:`videosynth.errors.Canceled`,
    which the engine must let propagate, leaving no partial output.
    """

    def __call__(self, done: int, total: int, stage: str | None = None) -> None: ...


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
    """The video the engine process made: what the worker stores and bills."""

    frames: int
    duration: float  # seconds of video written


@dataclass(frozen=True)
class Frames:
    """A frame engine's video, before encoding.

    ``frames``: exactly ``request.num_frames`` ``(height, width, 3)`` ``uint8`` RGB arrays, in order. It is
    iterated once, on a thread of its own, while earlier frames are encoded; an iterator that computes each
    frame when asked keeps only a few in memory. Yielding the same array object again (a held picture) is
    cheap, so an array once yielded must not be changed. ``hints[i]`` tells the encoder what frame ``i`` is
    (a dissolve's blend, its anchors); frames past the end of ``hints`` are left to the encoder.

    ``stage``: what the task shows while the frames are encoded: ``"rendering"`` where frames are computed
    as they are consumed, the default ``"encoding"`` where they are ready (decoded by then).
    """

    frames: Iterable[np.ndarray]
    hints: Sequence[PictureHint] = ()
    stage: str = "encoding"


@runtime_checkable
class FrameEngine(Protocol):
    """Builds once (loading weights if any), then makes the frames of many videos."""

    name: str

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        """The frames of ``request``'s video. Work may happen here (a diffusion model's denoising, reported
        through ``on_progress``) or lazily in the returned iterable, which may call ``on_progress`` too."""
        ...

    def warm_up(self) -> None:
        """Exercise the generation path once, cheaply, before the first task (the engine process calls
        it after building the engine, and warms the encoder itself). The first call of a code path pays
        for lazy imports, library initialisation and caches; without this the first task pays for them."""
        ...


@runtime_checkable
class FileEngine(Protocol):
    """Builds once, then writes the MP4 of many videos itself (a relay to an upstream service)."""

    name: str

    def write_video(
        self, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
    ) -> None:
        """Write ``request``'s video, an MP4 of ``request.num_frames`` frames at ``request.fps`` (or of
        ``request.duration`` seconds at another rate), to ``output_path``."""
        ...

    def warm_up(self) -> None:
        """As :meth:`FrameEngine.warm_up`."""
        ...


Engine: TypeAlias = FrameEngine | FileEngine
"""What the registry builds: either shape (``videosynth.engines.registry.create_engine`` checks which)."""
