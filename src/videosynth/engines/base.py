"""The engine seam: two shapes of engine behind one progress contract.

An engine turns a :class:`GenerationRequest` into a video. It knows nothing about tasks, stores or storage.
Engines run in the worker's engine process (``videosynth.worker.host``), never in the API, in one of two
shapes:

* a :class:`FrameEngine` hands back :class:`Frames` (RGB arrays, optionally with per-frame picture hints) and
  the engine process encodes them (``videosynth.worker.video``). The H.264 settings, the faststart layout
  and the exact frame count (``request.num_frames``) are the worker's, in one place, for every such engine.
  Frames are consumed on a producer thread while the previous ones are encoded, so an engine that yields
  them lazily renders and encodes at once.
* a :class:`FileEngine` writes an MP4 itself; the engine process then checks it is an MP4 with the
  request's frame count or duration.

Both report progress through one :class:`ProgressCallback`. A third shape, :class:`RelayEngine`, forwards
the task to an upstream service and runs in the worker process itself (see its docstring).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
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
class Audio:
    """A soundtrack made with the frames: ``samples`` a ``(channels, n)`` float32 array in [-1, 1] (1 or 2
    channels) at ``sample_rate`` Hz, starting with the first frame. The worker trims or pads it with silence
    to exactly the video's duration and muxes it as AAC beside the H.264 stream."""

    samples: np.ndarray
    sample_rate: int


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

    ``audio``: the video's sound, for engines that make one (None: the MP4 has no audio stream).
    """

    frames: Iterable[np.ndarray]
    hints: Sequence[PictureHint] = ()
    stage: str = "encoding"
    audio: Audio | None = None


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


Engine: TypeAlias = "FrameEngine | FileEngine | RelayEngine"
"""What the registry builds: any shape (``videosynth.engines.registry.create_engine`` checks which)."""


# --- relay engines ------------------------------------------------------------------------------------------
# A relay engine does not make the video: an upstream service does, for minutes, while the relay waits. So it
# is not run in the engine process one task at a time; the worker keeps many relayed tasks in flight at once
# (``videosynth.worker.relay``) and calls these short, blocking steps from a few threads. The relay keeps the
# upstream's wire to itself: what crosses this seam is the domain's words.


@dataclass(frozen=True)
class RelayMedia:
    """One reference as the relay passes it on: a URL the upstream fetches itself (``url``), or the bytes we
    hold (an inline reference, an uploaded file) in ``data``, which the relay inlines or uploads upstream."""

    index: int
    url: str | None = None
    data: bytes | None = None
    mime: str = "application/octet-stream"
    filename: str = "reference"


@dataclass(frozen=True)
class RelayRequest:
    model: str  # the public model name the task was submitted for
    prompt: str
    media: tuple[RelayMedia, ...]
    resolution: str
    ratio: str
    duration: int
    seed: int
    watermark: bool


class UpstreamPhase(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    UNKNOWN = "unknown"  # the upstream does not know the task (expired, another key's, lost)


@dataclass(frozen=True)
class UpstreamStatus:
    phase: UpstreamPhase
    #: Percent done, where the upstream says (0-100).
    progress: int | None = None
    #: SUCCEEDED: where the video is, and the seconds of video the upstream bills.
    result_url: str | None = None
    video_seconds: float | None = None
    #: FAILED / CANCELED: the upstream's own code and message.
    code: str | None = None
    message: str | None = None


@runtime_checkable
class RelayEngine(Protocol):
    """Forwards tasks to an upstream service. Every method is one short exchange, safe from any thread.

    Transient trouble is raised, not returned: :class:`videosynth.errors.UpstreamThrottled` (slow down),
    :class:`videosynth.errors.UpstreamUnavailable` (5xx, unreachable: try again; the worker gives up after
    :attr:`give_up_after_s`), :class:`videosynth.errors.SubmitAnswerLost` (the submit may have reached the
    upstream). Anything else of :class:`videosynth.errors.UpstreamError` fails the task.
    """

    name: str
    #: How long the upstream may stay unavailable (or not know a task) before the task fails.
    give_up_after_s: float

    def submit(self, request: RelayRequest) -> str:
        """Create the upstream task; its reference (the upstream's task id), kept private by the worker."""
        ...

    def find_submitted(self, request: RelayRequest, since_ms: int, until_ms: int) -> str | None:
        """After a submit whose answer was lost (sent between ``since_ms`` and ``until_ms``, epoch ms): the
        upstream task it created, or None when it certainly created none (submitting again is safe).
        Raises :class:`videosynth.errors.UpstreamSubmitLost` when it cannot tell."""
        ...

    def status(self, reference: str) -> UpstreamStatus: ...

    def cancel(self, reference: str) -> bool:
        """Ask the upstream to cancel; whether it did (it may refuse a task already running)."""
        ...

    def download(self, status: UpstreamStatus, destination: Path, should_stop: Callable[[], bool]) -> None:
        """Fetch a SUCCEEDED task's video into ``destination`` (raises UpstreamResultUnusable)."""
        ...

    def poll_delay(self, polls: int) -> float:
        """Seconds to wait before the status poll that follows ``polls`` earlier ones."""
        ...

    def warm_up(self) -> None:
        """As :meth:`FrameEngine.warm_up`."""
        ...
