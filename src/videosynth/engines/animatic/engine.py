"""The animatic engine: a deterministic storyboard renderer on the CPU, not a generative model.

It shows the reference images as a sequence of shots (one per ``[Image N]`` reference, in prompt order),
framed and moved as the prompt's camera directions ask, with cross-fades between shots; see
:mod:`videosynth.engines.animatic.shots` for the vocabulary and :mod:`videosynth.engines.animatic.render`
for the look.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np
from PIL import Image

from videosynth.engines.animatic.options import WATERMARK_TEXT
from videosynth.engines.animatic.render import dissolves, render_frames, shot_zoom
from videosynth.engines.animatic.shots import Shot, parse_shots
from videosynth.engines.base import Frames, GenerationRequest, ProgressCallback, ReferenceImage
from videosynth.errors import Canceled, EngineError, VideosynthError
from videosynth.media.encode import PictureHint
from videosynth.media.images import load_reference
from videosynth.media.validate import decode_failure

log = logging.getLogger(__name__)


class _LazyReferences(Sequence[np.ndarray]):
    """The request's reference images, decoded on first access by the renderer (in its producer thread).

    Decoding image 2..n then overlaps with encoding the first shots. Nothing is cached: the renderer asks
    for each image once and lets it go after the image's last shot, so at most the images of the current
    and next shot are in memory.
    """

    def __init__(self, references: Sequence[ReferenceImage], boxes: Sequence[tuple[int, int]]) -> None:
        self._references = references
        self._boxes = boxes

    def __len__(self) -> int:
        return len(self._references)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(i, slice):
            raise TypeError("slicing is not supported")
        ref = self._references[i]
        try:
            return load_reference(ref.path, *self._boxes[i])
        except MemoryError:
            raise  # the machine's trouble, not the image's: the engine host reports it as such
        except Exception as exc:  # the worker checked the header only; bad pixel data shows up here
            raise decode_failure(ref.format, ref.width, ref.height, exc, index=ref.index) from exc


def picture_hints(shots: Sequence[Shot], num_frames: int, fps: int) -> list[PictureHint]:
    """Tell the encoder where the cross-fades are: each dissolve frame is a B-frame between two P anchors."""
    hints = [PictureHint.AUTO] * num_frames
    for fade in dissolves(shots, num_frames, fps):
        for t in fade:
            hints[t] = PictureHint.BLEND
        for anchor in (fade.start - 1, fade.stop):
            if 0 <= anchor < num_frames:
                hints[anchor] = PictureHint.ANCHOR
    return hints


class AnimaticEngine:
    """:class:`videosynth.engines.base.FrameEngine` that renders a storyboard-style animatic on the CPU.

    Its frames are rendered one at a time as the engine process encodes them (on the encoder's producer
    thread), so render and encode overlap; it reports no progress itself, since each encoded frame is one.
    """

    name = "animatic"

    def __init__(self, *, watermark_text: str = WATERMARK_TEXT) -> None:
        self.watermark_text = watermark_text

    def warm_up(self) -> None:
        """Render a tiny two-shot animatic with a dissolve, touching every rendering stage once (the engine
        process warms the encoder). Measured: without a warm-up the first task after a start took ~0.1 s
        longer than the next ones at 720p."""
        with tempfile.TemporaryDirectory(prefix="videosynth-warm-up-") as tmp:
            folder = Path(tmp)
            references = []
            gradient = np.repeat(np.linspace(0, 255, 96 * 3, dtype=np.uint8).reshape(1, 96, 3), 64, axis=0)
            for index, pixels in ((1, gradient), (2, gradient[:, ::-1])):
                path = folder / f"ref{index}.jpg"
                Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=80)
                references.append(ReferenceImage(index=index, path=path, width=96, height=64))
            request = GenerationRequest(
                prompt="[Image 1] close-up. [Image 2] wide shot.",
                references=tuple(references),
                resolution="720P",
                ratio="16:9",
                width=128,
                height=72,
                duration=3,  # two shots need 2 x 1 s of clean view plus the dissolve's frames to get one
                fps=24,
                seed=0,
                watermark=True,
            )
            for _ in self.frames(request, _ignore_progress).frames:
                pass

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        """The animatic of ``request``, as frames rendered when asked for, with the dissolves' hints.

        A bad request is an EngineError here; while rendering, our own errors (an undecodable reference
        is ``InvalidImageFormat``) propagate as they are, anything else becomes an ``EngineError`` whose
        cause is the original exception.
        """
        total = request.num_frames
        width, height, fps = request.width, request.height, request.fps
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise EngineError(f"frame size must be positive and even, got {width}x{height}")
        if total <= 0 or fps <= 0:
            raise EngineError(f"nothing to render: {request.duration} s at {fps} fps")
        references = sorted(request.references, key=lambda ref: ref.index)
        if not references:
            raise EngineError("the animatic needs at least one reference image")
        if [ref.index for ref in references] != list(range(1, len(references) + 1)):
            raise EngineError(
                f"reference indices must be 1..{len(references)}, got {[r.index for r in references]}"
            )
        shots = parse_shots(request.prompt, len(references))
        boxes = []
        for ref in references:
            # An image only needs the pixels its most zoomed-in shot shows (contain fit x zoom).
            zoom = max((shot_zoom(s) for s in shots if s.image_index == ref.index), default=1.0)
            boxes.append((math.ceil(width * zoom), math.ceil(height * zoom)))
        rendered = render_frames(
            shots,
            _LazyReferences(references, boxes),
            width,
            height,
            fps,
            total,
            seed=request.seed,
            watermark=request.watermark,
            watermark_text=self.watermark_text,
        )
        return Frames(_rendering_errors(rendered), hints=picture_hints(shots, total, fps), stage="rendering")


def _ignore_progress(done: int, total: int, stage: str | None = None) -> None:
    pass


def _rendering_errors(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    try:
        yield from frames
    except (Canceled, VideosynthError):
        raise
    except Exception as exc:
        # The exception's text may name server files: the log gets it, the task the exception's type.
        log.exception("animatic rendering failed")
        raise EngineError(f"The animatic could not render the video ({type(exc).__name__}).") from exc
