"""From an engine to an MP4, in the engine process: the one place that encodes and checks engines' videos.

A frame engine's frames are encoded here (``videosynth.media.encode``: its H.264 settings and faststart
layout), counted (exactly ``request.num_frames``, or the task fails with ``EngineOutputInvalid``) and
checked for size; a file engine's MP4 is checked for its container, its frame count or duration. Either
way the caller gets the :class:`GenerationResult` it stores, and no partial file on failure.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from videosynth.engines.base import (
    Audio,
    Engine,
    FileEngine,
    FrameEngine,
    Frames,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
)
from videosynth.errors import Canceled, EngineError, EngineOutputInvalid, VideosynthError
from videosynth.media.encode import VideoWriter, encode_frames

log = logging.getLogger(__name__)

# PyAV's name for the demuxer of MP4 and its ISO-BMFF relatives.
_MP4_DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"


def make_video(
    engine: Engine, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
) -> GenerationResult:
    """Have ``engine`` make ``request``'s video at ``output_path``, encoding its frames if it yields frames.

    Canceled and our own errors propagate as they are; anything else becomes an EngineError naming only
    the exception's type (its text may name server files: the log gets it).
    """
    output_path = Path(output_path)
    try:
        if isinstance(engine, FrameEngine):
            return _encode(engine.frames(request, on_progress), request, output_path, on_progress)
        if not isinstance(engine, FileEngine):
            raise EngineError(f"engine {engine.name!r} relays to an upstream; the worker runs it, not this")
        engine.write_video(request, output_path, on_progress)
        return check_video_file(output_path, request)
    except BaseException as exc:
        output_path.unlink(missing_ok=True)
        if isinstance(exc, (Canceled, VideosynthError)) or not isinstance(exc, Exception):
            raise
        log.exception("engine %s failed", engine.name)
        raise EngineError(f"The engine could not make the video ({type(exc).__name__}).") from exc


def _encode(
    frames: Frames, request: GenerationRequest, output_path: Path, on_progress: ProgressCallback
) -> GenerationResult:
    total = request.num_frames
    stage = frames.stage

    def on_frame(i: int) -> None:
        # Once per frame: every report is also where a cancel arrives, and a frame is the smallest step.
        on_progress(i + 1, total, stage)

    on_progress(0, total, stage)
    written = encode_frames(
        _checked(frames.frames, request),
        output_path,
        request.width,
        request.height,
        request.fps,
        on_frame=on_frame,
        hints=frames.hints,
        audio=_soundtrack(frames.audio, request) if frames.audio is not None else None,
    )
    if written != total:
        raise EngineOutputInvalid(f"The engine made {written} frames; the video needs {total}.")
    return GenerationResult(frames=written, duration=written / request.fps)


def _soundtrack(audio: Audio, request: GenerationRequest) -> tuple[np.ndarray, int]:
    """The engine's sound as long as the video, to the sample: cut, or padded with silence (a generated track
    may end a little before or after the frames: MiniMax-H3 makes 40 audio latents a second on a frame grid of
    its own)."""
    samples = audio.samples
    if not isinstance(samples, np.ndarray) or samples.ndim != 2 or samples.shape[0] not in (1, 2):
        got = samples.shape if isinstance(samples, np.ndarray) else type(samples).__name__
        raise EngineOutputInvalid(
            f"The engine's audio is {got}; it needs (channels, samples), 1 or 2 channels."
        )
    if audio.sample_rate <= 0:
        raise EngineOutputInvalid(f"The engine's audio sample rate is {audio.sample_rate}.")
    if not np.isfinite(samples).all():
        raise EngineOutputInvalid("The engine's audio has samples that are not finite.")
    wanted = request.duration * audio.sample_rate
    samples = samples[:, :wanted].astype(np.float32, copy=False)
    if samples.shape[1] < wanted:
        samples = np.pad(samples, ((0, 0), (0, wanted - samples.shape[1])))
    return samples, audio.sample_rate


def _checked(frames: Iterable[np.ndarray], request: GenerationRequest) -> Iterator[np.ndarray]:
    """``frames``, each checked for size and type, stopping at the first one too many (an engine that never
    stops must not be encoded for ever)."""
    shape = (request.height, request.width, 3)
    total = request.num_frames
    last: np.ndarray | None = None
    iterator = iter(frames)
    try:
        for index, frame in enumerate(iterator):
            if index >= total:
                raise EngineOutputInvalid(
                    f"The engine made more than {total} frames; the video needs {total}."
                )
            if frame is not last:
                if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != shape:
                    got = (
                        f"{frame.shape} {frame.dtype}"
                        if isinstance(frame, np.ndarray)
                        else type(frame).__name__
                    )
                    raise EngineOutputInvalid(f"Frame {index} is {got}; the video needs {shape} uint8 RGB.")
                last = frame
            yield frame
    finally:
        # A for loop leaves the engine's generator open when we stop early: close it now, so its cleanup
        # (the animatic joins its helper thread) runs before the encoder returns, not at garbage collection.
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def check_video_file(path: Path, request: GenerationRequest) -> GenerationResult:
    """What a file engine wrote, if it is an MP4 with a video stream of ``request.num_frames`` frames at
    ``request.fps``, or, at another frame rate, of ``request.duration`` seconds to within one frame."""
    try:
        with av.open(str(path)) as container:
            if container.format.name != _MP4_DEMUXER:
                raise EngineOutputInvalid(f"The engine's video is {container.format.name}, not MP4.")
            if not container.streams.video:
                raise EngineOutputInvalid("The engine's MP4 has no video stream.")
            stream = container.streams.video[0]
            # The sample table gives the count without reading the file; demux only where it is missing.
            frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            rate = stream.average_rate or Fraction(request.fps)
    except FileNotFoundError:
        raise EngineOutputInvalid("The engine wrote no video.") from None
    except (av.FFmpegError, OSError) as exc:
        raise EngineOutputInvalid(f"The engine's video cannot be read ({type(exc).__name__}).") from exc
    duration = float(frames / rate)
    if rate == request.fps:
        if frames != request.num_frames:
            raise EngineOutputInvalid(
                f"The engine's video has {frames} frames; the video needs {request.num_frames}."
            )
    elif abs(duration - request.duration) > 1 / rate:
        raise EngineOutputInvalid(
            f"The engine's video lasts {duration:.2f} s; the video needs {request.duration} s."
        )
    return GenerationResult(frames=frames, duration=duration)


def warm_up_encoder() -> None:
    """Encode two tiny frames, so the first task does not pay for x264's and the muxer's start-up."""
    with tempfile.TemporaryDirectory(prefix="videosynth-warm-up-") as tmp:
        picture = np.zeros((16, 16, 3), np.uint8)
        with VideoWriter(Path(tmp) / "warm-up.mp4", 16, 16) as writer:
            writer.write(picture)
            writer.write(picture + 1)
