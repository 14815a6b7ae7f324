"""How a request maps onto Wan VACE's native space, and back (pure numpy and OpenCV; no torch).

Wan generates at 16 fps, ``4k + 1`` frames, at sizes that are multiples of 16, within a tier (480P or
720P) it was trained at. A request asks for an exact table size (``videosynth.sizes``), 24 fps and a whole
number of seconds. This module computes the generation geometry, splits long videos into chained
segments, stitches them back, and turns the model's frames into the request's (resample in time, resize
and crop in space). ``docs/engines.md`` describes the same mapping for users.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from videosynth import sizes
from videosynth.engines.markers import REFERENCE_MARKER, marker_number
from videosynth.media.watermark import Watermark

MODEL_FPS = 16
# VAE: 8x spatial compression, times the transformer's 2x2 patches.
SIZE_MULTIPLE = 16
# The VAE packs 4 frames into one latent frame after the first one.
FRAMES_PER_LATENT = 4


def generation_tier(resolution: str, model_tier: str) -> str:
    """The tier the model generates at: 1080P comes from 720P; nothing is generated above the model's tier."""
    if resolution == "480P" or model_tier == "480P":
        return "480P"
    return "720P"


def generation_size(resolution: str, ratio: str, model_tier: str, max_area: int = 0) -> tuple[int, int]:
    """``(width, height)`` the model generates: the tier's table size, shrunk to ``max_area`` pixels if set.

    Both are multiples of 16 (the table's 480P and 720P sizes already are); shrinking keeps the aspect
    ratio as closely as 16-pixel steps allow.
    """
    width, height = sizes.frame_size(generation_tier(resolution, model_tier), ratio)
    scale = math.sqrt(max_area / (width * height)) if max_area and width * height > max_area else 1.0
    return _multiple_of_16(width * scale), _multiple_of_16(height * scale)


def _multiple_of_16(value: float) -> int:
    return max(SIZE_MULTIPLE, int(value // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def model_frames(duration: int) -> int:
    """Frames at 16 fps covering ``duration`` seconds for 24 fps output: ``16 * duration + 1`` (4k + 1).

    The last output frame (time ``duration - 1/24``) lies between model frames ``16 * duration - 1`` and
    ``16 * duration``, so both must exist.
    """
    return MODEL_FPS * duration + 1


def round_up_to_window(frames: int) -> int:
    """The smallest ``4k + 1 >= frames``: a frame count the pipeline takes as it is."""
    return max(1, math.ceil((frames - 1) / FRAMES_PER_LATENT)) * FRAMES_PER_LATENT + 1


def min_frames_for_references(count: int) -> int:
    """``WanVACEPipeline`` needs at least as many latent frames as references (diffusers 0.42.1 crashes
    otherwise): ``4 * (count - 1) + 1`` frames."""
    return FRAMES_PER_LATENT * max(0, count - 1) + 1


@dataclass(frozen=True)
class Segment:
    """One pipeline call: model frames ``start .. start + length`` (the tail past the video is dropped).

    The first ``keep`` frames repeat the end of the previous segment: they are given to VACE as known
    ``video`` frames (``mask`` 0) and blended into the previous segment's frames at the seam.
    """

    start: int
    length: int
    keep: int


def plan_segments(total: int, segment_frames: int, overlap: int, min_length: int = 1) -> list[Segment]:
    """Segments that cover ``total`` model frames, each at most ``segment_frames`` long (unless
    ``min_length``, the references' minimum, is longer), each after the first overlapping the previous
    one by ``overlap`` frames."""
    if total <= 0:
        raise ValueError(f"nothing to generate: {total} frames")
    if not 0 < overlap < segment_frames:
        raise ValueError(f"overlap must be between 1 and {segment_frames - 1}, got {overlap}")
    first = round_up_to_window(max(min(total, segment_frames), min_length))
    segments = [Segment(0, first, 0)]
    covered = first
    while covered < total:
        start = covered - overlap
        length = round_up_to_window(max(min(total - start, segment_frames), min_length, overlap + 1))
        segments.append(Segment(start, length, overlap))
        covered = start + length
    return segments


def seam_weights(keep: int) -> np.ndarray:
    """Weight of the new segment at each of the ``keep`` shared frames: a linear cross-fade that leaves
    both ends of the seam to one segment alone."""
    return np.arange(1, keep + 1, dtype=np.float32) / (keep + 1)


def stitch(video: np.ndarray, segment: Segment, frames: np.ndarray) -> None:
    """Write ``frames`` (uint8, the segment's) into ``video`` (uint8, all model frames), cross-fading the
    shared frames with what the previous segment made there."""
    end = min(segment.start + segment.length, len(video))
    frames = frames[: end - segment.start]
    keep = min(segment.keep, len(frames))
    if keep:
        old = video[segment.start : segment.start + keep].astype(np.float32)
        w = seam_weights(keep)[:, None, None, None]
        blended = old * (1 - w) + frames[:keep].astype(np.float32) * w
        video[segment.start : segment.start + keep] = np.rint(blended).astype(np.uint8)
    video[segment.start + keep : end] = frames[keep:]


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """The pipeline's float frames in [0, 1] as uint8 RGB."""
    pixels: np.ndarray = np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    return pixels


def resample_positions(count: int, fps: int, source_fps: int = MODEL_FPS) -> list[tuple[int, int, float]]:
    """For each of ``count`` output frames at ``fps``: ``(i0, i1, w)``, frame = ``(1 - w) * src[i0] + w * src[i1]``.

    Output frame ``j`` shows time ``j / fps``, which is source frame ``j * source_fps / fps``: at 16 to 24
    fps the weights cycle 0, 2/3, 1/3 (a linear blend of the two nearest model frames; exact integer
    arithmetic, so the pattern never drifts).
    """
    positions = []
    for j in range(count):
        i0, remainder = divmod(j * source_fps, fps)
        w = remainder / fps
        positions.append((i0, i0 + 1 if w else i0, w))
    return positions


def output_frames(
    video: np.ndarray,
    width: int,
    height: int,
    count: int,
    fps: int,
    watermark: Watermark | None,
) -> Iterator[np.ndarray]:
    """The request's frames from the model's: ``count`` frames at ``fps``, resized to cover ``width x
    height`` and centre-cropped, watermarked; one at a time (the encoder asks for them)."""
    source_height, source_width = video.shape[1:3]
    scale = max(width / source_width, height / source_height)
    scaled = (max(width, round(source_width * scale)), max(height, round(source_height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    for i0, i1, w in resample_positions(count, fps):
        frame = cv2.addWeighted(video[i0], 1.0 - w, video[i1], w, 0.0) if w else video[i0]
        if scaled != (source_width, source_height):
            frame = cv2.resize(frame, scaled, interpolation=interpolation)
        frame = np.ascontiguousarray(frame[top : top + height, left : left + width])
        if watermark is not None:
            if np.shares_memory(frame, video):  # model frames are shown more than once: draw on a copy
                frame = frame.copy()
            watermark.apply(frame)
        yield frame


_CJK_MARKER = re.compile("图")


def rewrite_prompt(prompt: str, count: int) -> str:
    """``[Image N]`` markers as words a text encoder knows: ``reference image N`` (``参考图N`` for a
    Chinese marker). Wan's encoder has never seen the bracket notation; the image order the model sees
    matches the numbers (see the engine)."""

    def words(match: re.Match[str]) -> str:
        n = marker_number(match)
        if not 1 <= n <= count:
            return match.group(0)
        return f"参考图{n}" if _CJK_MARKER.search(match.group(0)) else f"reference image {n}"

    return REFERENCE_MARKER.sub(words, prompt)


def reference_order(indices: Sequence[int]) -> list[int]:
    """The order to hand references to ``WanVACEPipeline`` so that ``[Image 1]`` is the first latent frame.

    diffusers 0.42.1 prepends each reference in turn (``pipeline_wan_vace.py``, ``prepare_video_latents``),
    which reverses the list; handing it reversed puts them in ``[Image N]`` order, as the original VACE code
    (``torch.cat([*ref_latent, latent])``) has them.
    """
    return list(reversed(indices))
