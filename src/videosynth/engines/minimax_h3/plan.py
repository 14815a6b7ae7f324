"""How a request maps onto MiniMax-H3's native space, and back (pure numpy and OpenCV; no torch).

MiniMax-H3 generates video and a stereo soundtrack together, at 24 fps, ``17n + 5`` frames (its VAE encodes
17-frame chunks), on a canvas whose sides are multiples of 32 (16x VAE compression times 2x2 patches) with
a short edge of 768 and at most 768x1344 pixels. A request asks for an exact table size
(``videosynth.sizes``), 24 fps and a whole number of seconds (3 to 15). This module picks the canvas and
the frame count, labels the references the way the model's prompt presentation does, and turns the model's
frames and waveform into exactly the request's (resize, centre-crop, trim).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import cv2
import numpy as np

from videosynth import sizes
from videosynth.engines.markers import REFERENCE_MARKER, marker_number
from videosynth.media.opencv import exact_kernels
from videosynth.media.watermark import Watermark

MODEL_FPS = 24
# The video VAE encodes 17-frame chunks into 5 latent frames (diffusers' ``align_num_frames``).
FRAMES_PER_CHUNK, LATENTS_PER_CHUNK = 17, 5
# Both canvas sides: the VAE's 16x spatial compression times the transformer's 2x2 patches.
CANVAS_MULTIPLE = 32
# The released checkpoint's canvas (its ``canvas_short_edge`` / ``canvas_max_pixels`` configs).
CANVAS_SHORT_EDGE, CANVAS_MAX_PIXELS = 768, 768 * 1344
# The aspect ratios the model was trained over (and the only ones the pipeline accepts).
MIN_ASPECT, MAX_ASPECT = 1 / 4, 4.0
MAX_REFERENCES = 9


def model_frames(num_frames: int) -> int:
    """The smallest ``17n + 5 >= num_frames`` (72 -> 73, 360 -> 362): a count the pipeline takes as it is."""
    n = max(0, math.ceil((num_frames - LATENTS_PER_CHUNK) / FRAMES_PER_CHUNK))
    return FRAMES_PER_CHUNK * n + LATENTS_PER_CHUNK


# The frame counts of the shortest and longest request (3 s, 15 s).
MIN_FRAMES = model_frames(sizes.MIN_DURATION * sizes.FPS)
MAX_FRAMES = model_frames(sizes.MAX_DURATION * sizes.FPS)


def duration_bounds() -> tuple[float, float]:
    """``(shortest, longest)`` seconds the pipeline must accept for every request duration: the lengths of
    the frame counts 3 s and 15 s generate (73 and 362 frames). diffusers' own bounds (5 and 15 s of
    *aligned* frames, so 124 to 345 frames) refuse 3, 4 and 15 s; the engine's pipeline widens them."""
    return MIN_FRAMES / MODEL_FPS, MAX_FRAMES / MODEL_FPS


def canvas_size(
    width: int,
    height: int,
    short_edge: int = CANVAS_SHORT_EDGE,
    max_pixels: int = CANVAS_MAX_PIXELS,
    max_area: int = 0,
) -> tuple[int, int]:
    """``(width, height)`` the model generates for a ``width x height`` request: the request's aspect ratio
    (clamped to 1:4 .. 4:1) on the model's canvas, a short edge of ``short_edge`` within ``max_pixels``
    (and ``max_area``, when set), both sides multiples of 32.

    Each side is rounded down or up to a multiple of 32, whichever pair stays within the limits and keeps
    the aspect ratio best (the pipeline's own canvas rounds to the nearest multiple, which can overshoot
    the area): 16:9 gives the model's 1344x768, 1:1 768x768.
    """
    budget = min(max_pixels, max_area) if max_area else max_pixels
    ratio = min(max(width / height, MIN_ASPECT), MAX_ASPECT)
    ideal_w, ideal_h = (
        (short_edge * ratio, float(short_edge)) if ratio >= 1 else (short_edge, short_edge / ratio)
    )
    if ideal_w * ideal_h > budget:
        scale = math.sqrt(budget / (ideal_w * ideal_h))
        ideal_w, ideal_h = ideal_w * scale, ideal_h * scale
    candidates = [
        (w, h)
        for w in _multiples_around(ideal_w)
        for h in _multiples_around(ideal_h)
        if w * h <= budget and min(w, h) <= short_edge
    ]
    if not candidates:  # a budget under one 32x32 block
        return CANVAS_MULTIPLE, CANVAS_MULTIPLE
    return min(candidates, key=lambda c: (abs(math.log(c[0] / c[1] / ratio)), -c[0] * c[1]))


def _multiples_around(value: float) -> tuple[int, ...]:
    below = max(CANVAS_MULTIPLE, math.floor(value / CANVAS_MULTIPLE) * CANVAS_MULTIPLE)
    return (below, below + CANVAS_MULTIPLE)


def rewrite_prompt(prompt: str, count: int) -> str:
    """``[Image k]`` (and the other forms of :data:`~videosynth.engines.markers.REFERENCE_MARKER`) as
    ``<Picture k>``, the label MiniMax-H3's prompt presentation gives the k-th image reference (it prepends
    ``<Picture k>: `` and the image's vision tokens for each, in order). Markers past ``count`` and all other
    text stay as written."""

    def label(match: re.Match[str]) -> str:
        n = marker_number(match)
        return f"<Picture {n}>" if 1 <= n <= count else match.group(0)

    return REFERENCE_MARKER.sub(label, prompt)


def reference_box(width: int, height: int, short_edge: int) -> tuple[int, int]:
    """The box to decode a ``width x height`` reference into: shrunk to a short edge of ``short_edge`` at
    most (the pipeline resizes every image reference to that short edge), whichever way EXIF turns it."""
    side = max(width, height)
    if min(width, height) > short_edge:
        side = math.ceil(side * short_edge / min(width, height))
    return side, side


def fit_reference_aspect(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (RGB uint8), padded with white to 4:1 or 1:4 where it is longer than that (the pipeline
    refuses such references); centred, so nothing of the subject is cut."""
    height, width = pixels.shape[:2]
    target_w, target_h = (
        max(width, math.ceil(height * MIN_ASPECT)),
        max(height, math.ceil(width * MIN_ASPECT)),
    )
    if (target_w, target_h) == (width, height):
        return pixels
    canvas = np.full((target_h, target_w, 3), 255, np.uint8)
    top, left = (target_h - height) // 2, (target_w - width) // 2
    canvas[top : top + height, left : left + width] = pixels
    return canvas


def audio_samples(duration: int, sample_rate: int) -> int:
    """Samples of a ``duration``-second soundtrack."""
    return duration * sample_rate


def trim_audio(audio: np.ndarray, count: int) -> np.ndarray:
    """``audio`` ``(channels, n)`` as exactly ``count`` float32 samples per channel in [-1, 1]: cut, or padded
    with silence (the model's soundtrack covers its ``17n + 5`` frames, a little more than asked)."""
    out = np.zeros((audio.shape[0], count), np.float32)
    kept = min(count, audio.shape[1])
    out[:, :kept] = np.clip(audio[:, :kept], -1.0, 1.0)
    return out


def output_frames(
    video: np.ndarray, width: int, height: int, count: int, watermark: Watermark | None
) -> Iterator[np.ndarray]:
    """The request's frames from the model's (``(frames, h, w, 3)`` uint8): the first ``count``, resized to
    cover ``width x height`` and centre-cropped, watermarked; one at a time (the encoder asks for them)."""
    if len(video) < count:
        raise ValueError(f"the model made {len(video)} frames, fewer than the {count} asked for")
    source_height, source_width = video.shape[1:3]
    scale = max(width / source_width, height / source_height)
    scaled = (max(width, round(source_width * scale)), max(height, round(source_height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    exact_kernels()  # on the thread that consumes the frames
    for frame in video[:count]:
        if scaled != (source_width, source_height):
            frame = cv2.resize(frame, scaled, interpolation=interpolation)
        frame = np.ascontiguousarray(frame[top : top + height, left : left + width])
        if watermark is not None:
            if np.shares_memory(frame, video):  # a view of the model's frames: draw on a copy
                frame = frame.copy()
            watermark.apply(frame)
        yield frame
