"""Streaming frame renderer of the animatic.

Model: every shot has a *stage*, a ``width x height`` board (units: output pixels at zoom 1) on which its
reference image is fitted whole (contain) over a cover-scaled, strongly blurred, darkened copy of itself.
The camera is a rectangle on the stage with the output's aspect ratio, given by its centre and a zoom
(zoom 1 sees the whole stage). Framing sets the zoom and centre (close-up 1.6x on the upper middle of the
image, where faces usually are; medium 1.25x); an angle biases the centre and adds a mild keystone; a move
animates zoom or centre with an ease-in-out curve.

Timing (:func:`schedule`): every shot first gets ``CLEAN_VIEW_SECONDS`` of its image outside any dissolve
when the duration allows, the dissolves giving way first when it does not; the rest follows the shots'
weights. A shot with two camera set-ups plays them one after the other, joined by a hard cut, when each
gets ``MIN_SHOT_SECONDS``.

Cost model (the point of the design): a *hold* shot is composed once, directly at output size, and the same
read-only array is yielded for each of its frames, so it costs nothing to render and almost nothing to
encode (the writer converts a repeated array once; x264 skips unchanged blocks). A moving shot is composed
once on a canvas at the largest zoom it reaches, covering only the part of the stage its camera visits,
so each frame is a single ``cv2.warpAffine`` of about output size. Cross-fades blend two such frames, and
:func:`dissolves` tells the encoder where they are. Nothing but the current shots' canvases is kept, so
memory does not grow with the duration.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from videosynth.engines.animatic.options import WATERMARK_TEXT
from videosynth.engines.animatic.shots import Shot, allocate_frames
from videosynth.media.opencv import exact_kernels
from videosynth.media.watermark import Watermark

FADE_SECONDS = 0.25
CLEAN_VIEW_SECONDS = 1.0  # what every shot shows outside its dissolves, when the duration allows
MIN_SHOT_SECONDS = 0.5  # the least a camera set-up of a two-set-up shot gets, or it is not split

_FRAMING_ZOOM = {"close_up": 1.6, "medium": 1.25, "wide": 1.0}
# Where, as a fraction of the image height from its top, close-ups and medium shots centre.
_FRAMING_CENTRE_Y = {"close_up": 0.38, "medium": 0.45}
_PUSH_ZOOM = 1.25  # push in / pull back end zoom, relative to the framing's zoom
_PAN_ZOOM = 1.15  # extra zoom that leaves room to pan or tilt
_PAN_TRAVEL = 0.12  # at most this fraction of the stage either side of the framing centre
_ANGLE_MIN_ZOOM = 1.2
_ANGLE_OFFSET = 0.07  # fraction of the stage the centre moves for an angle
_KEYSTONE = 0.05  # fraction of the stage width/height the far edge shrinks by, each side
_JITTER = 0.02  # seeded centre offset, fraction of the stage, only where the camera has room
_FILL_DOWNSCALE = 8  # the blurred fill is built at 1/8 of the stage size; it is smooth, so upscaling is free
_FILL_DARKEN = 0.65


# --------------------------------------------------------------------------------------------- geometry


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _scale_shift(sx: float, sy: float, dx: float, dy: float) -> np.ndarray:
    return np.array([[sx, 0.0, dx], [0.0, sy, dy], [0.0, 0.0, 1.0]])


def _to_index(m: np.ndarray) -> np.ndarray:
    """Turn a dst->src map between continuous coordinates (pixel i spans [i, i+1)) into OpenCV's index
    coordinates (pixel centres at integers), which is what WARP_INVERSE_MAP expects."""
    out: np.ndarray = _translate(-0.5, -0.5) @ m @ _translate(0.5, 0.5)
    return out


def _warp(
    src: np.ndarray, m: np.ndarray, size: tuple[int, int], border: int, dst: np.ndarray | None = None
) -> np.ndarray:
    """Warp ``src`` with the continuous dst->src map ``m`` (3x3) into an image of ``size`` (w, h)."""
    mi = _to_index(m)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if abs(mi[2, 0]) < 1e-12 and abs(mi[2, 1]) < 1e-12:
        mi = mi / mi[2, 2]
        return cv2.warpAffine(src, mi[:2], size, dst=dst, flags=flags, borderMode=border)
    return cv2.warpPerspective(src, mi, size, dst=dst, flags=flags, borderMode=border)


@dataclass(frozen=True)
class _View:
    """A camera rectangle on the stage: centre and zoom (zoom 1 sees the whole stage)."""

    cx: float
    cy: float
    zoom: float


def _ease(p: float) -> float:
    p = min(1.0, max(0.0, p))
    return p * p * (3.0 - 2.0 * p)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


# ---------------------------------------------------------------------------------------------- images


class _ImageAssets:
    """One reference image placed on a stage: contain rectangle and the blurred cover fill."""

    def __init__(self, image: np.ndarray, width: int, height: int) -> None:
        exact_kernels()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
            raise ValueError(
                f"reference images must be HxWx3 uint8 RGB arrays, got {image.shape} {image.dtype}"
            )
        self.image = np.ascontiguousarray(image)
        ih, iw = image.shape[:2]
        # Contain: the whole image visible, centred.
        self.scale = min(width / iw, height / ih)  # stage units per source pixel
        self.x0 = (width - iw * self.scale) / 2.0
        self.y0 = (height - ih * self.scale) / 2.0
        self.w = iw * self.scale
        self.h = ih * self.scale

        # Cover fill at 1/_FILL_DOWNSCALE of the stage: crop the part of the image a cover fit shows,
        # shrink it (INTER_AREA averages, so no aliasing), blur strongly and darken.
        fw = max(4, round(width / _FILL_DOWNSCALE))
        fh = max(4, round(height / _FILL_DOWNSCALE))
        cover = max(width / iw, height / ih)
        cw, ch = min(iw, width / cover), min(ih, height / cover)
        x0, y0 = (iw - cw) / 2.0, (ih - ch) / 2.0
        crop = image[
            int(y0) : max(int(y0) + 1, math.ceil(y0 + ch)), int(x0) : max(int(x0) + 1, math.ceil(x0 + cw))
        ]
        small = cv2.resize(crop, (fw, fh), interpolation=cv2.INTER_AREA)
        sigma = max(1.0, 0.06 * min(fw, fh))
        small = cv2.GaussianBlur(small, (0, 0), sigma, borderType=cv2.BORDER_REFLECT101)
        self.fill = cv2.convertScaleAbs(small, alpha=_FILL_DARKEN)
        self.fill_scale_x = fw / width  # fill pixels per stage unit
        self.fill_scale_y = fh / height

    def compose(self, canvas_to_stage: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Render the stage through ``canvas_to_stage`` (a continuous canvas->stage map) at ``size``."""
        exact_kernels()
        cw, ch = size
        fill_map = _scale_shift(self.fill_scale_x, self.fill_scale_y, 0.0, 0.0) @ canvas_to_stage
        fh, fw = self.fill.shape[:2]
        if np.allclose(fill_map, _scale_shift(fw / cw, fh / ch, 0.0, 0.0), atol=1e-9):
            # The canvas is the whole stage (a wide hold): a plain resize is the same map and 10x cheaper.
            canvas = cv2.resize(self.fill, size, interpolation=cv2.INTER_LINEAR)
        else:
            canvas = _warp(self.fill, fill_map, size, cv2.BORDER_REFLECT101)

        # Which part of the image the canvas sees, in source pixels (the map is projective, so the
        # corners bound it).
        corners = np.array([[0, 0, 1], [cw, 0, 1], [0, ch, 1], [cw, ch, 1]], dtype=np.float64).T
        stage = canvas_to_stage @ corners
        sx, sy = stage[0] / stage[2], stage[1] / stage[2]
        ih, iw = self.image.shape[:2]
        u0 = max(0, math.floor((sx.min() - self.x0) / self.scale) - 2)
        u1 = min(iw, math.ceil((sx.max() - self.x0) / self.scale) + 2)
        v0 = max(0, math.floor((sy.min() - self.y0) / self.scale) - 2)
        v1 = min(ih, math.ceil((sy.max() - self.y0) / self.scale) + 2)
        if u1 <= u0 or v1 <= v0:
            return canvas
        # Resample the visible part once to the canvas' pixel density (INTER_AREA when shrinking, so no
        # aliasing), then place it with a sub-pixel warp whose scale is 1.
        density = math.sqrt(abs(np.linalg.det(np.linalg.inv(canvas_to_stage)[:2, :2]))) * self.scale
        roi = self.image[v0:v1, u0:u1]
        rw = max(1, round((u1 - u0) * density))
        rh = max(1, round((v1 - v0) * density))
        if (rw, rh) == roi.shape[1::-1]:
            resized = roi  # the engine already loaded it at this density
        else:
            interp = cv2.INTER_AREA if density < 1.0 else cv2.INTER_CUBIC
            resized = cv2.resize(roi, (rw, rh), interpolation=interp)
        stage_to_resized = _scale_shift(
            rw / (u1 - u0) / self.scale,
            rh / (v1 - v0) / self.scale,
            -(self.x0 / self.scale + u0) * rw / (u1 - u0),
            -(self.y0 / self.scale + v0) * rh / (v1 - v0),
        )
        m = stage_to_resized @ canvas_to_stage
        if np.allclose(m[:2, :2], np.eye(2), atol=1e-6) and np.allclose(m[2], (0.0, 0.0, 1.0), atol=1e-9):
            # A pure translation (the usual wide hold): paste, rounding to whole pixels, instead of warping.
            _paste(canvas, resized, -round(m[0, 2]), -round(m[1, 2]))
        else:
            # BORDER_TRANSPARENT leaves the fill wherever the source point falls outside the image.
            _warp(resized, m, size, cv2.BORDER_TRANSPARENT, dst=canvas)
        return canvas


def _paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """Copy ``src`` into ``dst`` with its top-left corner at ``(x, y)``, clipped to ``dst``."""
    dh, dw = dst.shape[:2]
    sh, sw = src.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(dw, x + sw), min(dh, y + sh)
    if x1 > x0 and y1 > y0:
        dst[y0:y1, x0:x1] = src[y0 - y : y1 - y, x0 - x : x1 - x]


def shot_zoom(shot: Shot) -> float:
    """The largest camera zoom ``shot`` reaches (1 = whole stage), in any of its camera set-ups.

    A reference image needs ``shot_zoom`` times its contain-fit size in pixels to stay sharp; more is wasted,
    so the engine downscales larger images to that on load.
    """
    return max(_setup_zoom(s) for s in (shot, *shot.setups))


def _setup_zoom(shot: Shot) -> float:
    zoom = _FRAMING_ZOOM.get(shot.framing or "wide", 1.0)
    if shot.angle is not None:
        zoom = max(zoom, _ANGLE_MIN_ZOOM)
    if shot.move in ("push_in", "pull_back"):
        zoom *= _PUSH_ZOOM
    elif shot.move != "hold":
        zoom *= _PAN_ZOOM
    return zoom


# ------------------------------------------------------------------------------------------- watermark


def watermark_box(width: int, height: int, label: str = WATERMARK_TEXT) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the watermark patch in a ``width x height`` frame (x1, y1 exclusive)."""
    wm = Watermark(width, height, label)
    return wm.x0, wm.y0, wm.x1, wm.y1


# ----------------------------------------------------------------------------------------------- shots


class _ShotRenderer:
    """Frames of one shot; frame ``t`` is on the video's timeline (fades included)."""

    def __init__(
        self,
        assets: _ImageAssets,
        shot: Shot,
        stream: tuple[int, ...],
        visible: tuple[int, int],
        width: int,
        height: int,
        seed: int,
        watermark: Watermark | None,
    ) -> None:
        self.width, self.height = width, height
        self.move = shot.move
        self.visible_start, visible_end = visible
        self.visible_len = max(1, visible_end - self.visible_start)
        self.watermark = watermark
        rng = np.random.default_rng([seed & 0xFFFFFFFF, *stream])
        jitter_x, jitter_y, side_coin = rng.uniform(-1.0, 1.0, size=3)

        # Framing and angle: zoom and centre on the stage.
        zoom = _FRAMING_ZOOM.get(shot.framing or "wide", 1.0)
        cx, cy = width / 2.0, height / 2.0
        if shot.framing in _FRAMING_CENTRE_Y:
            cy = assets.y0 + assets.h * _FRAMING_CENTRE_Y[shot.framing]
        keystone: np.ndarray | None = None
        if shot.angle is not None:
            zoom = max(zoom, _ANGLE_MIN_ZOOM)
            keystone = self._keystone(shot.angle, side_coin >= 0.0)
            # Relative to the view, so a close-up's subject is not pushed out of frame.
            offset = _ANGLE_OFFSET / zoom
            if shot.angle == "low":
                cy += offset * height
            elif shot.angle == "high":
                cy -= offset * height
            else:
                cx += (offset if side_coin >= 0.0 else -offset) * width
        if zoom > 1.0:
            cx += jitter_x * _JITTER * width
            cy += jitter_y * _JITTER * height
        self.base = _View(cx, cy, zoom)
        self.keystone = keystone  # world stage -> displayed stage

        if self.move == "hold":
            self.still = self._compose_view(assets, self._clamp(self.base))
            if watermark is not None:
                watermark.apply(self.still)
            # Yielded many times: make accidental in-place edits by a consumer fail loudly.
            self.still.flags.writeable = False
            return

        # Moving: one canvas covering every view the camera takes, at the largest zoom it reaches, so each
        # frame is a downscale (or 1:1) resample of it.
        views = [self._view_at(i / 16.0) for i in range(17)]
        half = [(v.cx - width / (2 * v.zoom), v.cy - height / (2 * v.zoom)) for v in views]
        x0 = max(0.0, min(h[0] for h in half) - 1.0)
        y0 = max(0.0, min(h[1] for h in half) - 1.0)
        x1 = min(float(width), max(v.cx + width / (2 * v.zoom) for v in views) + 1.0)
        y1 = min(float(height), max(v.cy + height / (2 * v.zoom) for v in views) + 1.0)
        k = max(v.zoom for v in views)
        size = (max(1, math.ceil((x1 - x0) * k)), max(1, math.ceil((y1 - y0) * k)))
        self.origin, self.k = (x0, y0), k
        self.canvas = assets.compose(self._displayed_to_world(_scale_shift(1 / k, 1 / k, x0, y0)), size)

    def _keystone(self, angle: str, positive: bool) -> np.ndarray:
        w, h, d = float(self.width), float(self.height), _KEYSTONE
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        dst: list[list[float]]
        if angle == "low":  # looking up: verticals converge at the top
            dst = [[d * w, 0], [w - d * w, 0], [w, h], [0, h]]
        elif angle == "high":  # looking down: they converge at the bottom
            dst = [[0, 0], [w, 0], [w - d * w, h], [d * w, h]]
        elif positive:  # side: the far edge is shorter
            dst = [[0, 0], [w, d * h], [w, h - d * h], [0, h]]
        else:
            dst = [[0, d * h], [w, 0], [w, h], [0, h - d * h]]
        return np.asarray(cv2.getPerspectiveTransform(src, np.array(dst, dtype=np.float32)), dtype=np.float64)

    def _displayed_to_world(self, canvas_to_displayed: np.ndarray) -> np.ndarray:
        if self.keystone is None:
            return canvas_to_displayed
        out: np.ndarray = np.linalg.inv(self.keystone) @ canvas_to_displayed
        return out

    def _clamp(self, view: _View) -> _View:
        """Keep the camera rectangle inside the stage."""
        hw, hh = self.width / (2 * view.zoom), self.height / (2 * view.zoom)
        return _View(
            min(max(view.cx, hw), self.width - hw), min(max(view.cy, hh), self.height - hh), view.zoom
        )

    def _view_at(self, progress: float) -> _View:
        e = _ease(progress)
        b = self.base
        if self.move == "push_in":
            return self._clamp(_View(b.cx, b.cy, b.zoom * _lerp(1.0, _PUSH_ZOOM, e)))
        if self.move == "pull_back":
            return self._clamp(_View(b.cx, b.cy, b.zoom * _lerp(_PUSH_ZOOM, 1.0, e)))
        zoom = b.zoom * _PAN_ZOOM
        if self.move in ("pan_left", "pan_right"):
            lo, hi = self._travel(b.cx, zoom, self.width)
            a, c = (lo, hi) if self.move == "pan_right" else (hi, lo)
            return self._clamp(_View(_lerp(a, c, e), b.cy, zoom))
        if self.move in ("tilt_up", "tilt_down"):
            lo, hi = self._travel(b.cy, zoom, self.height)
            a, c = (hi, lo) if self.move == "tilt_up" else (lo, hi)
            return self._clamp(_View(b.cx, _lerp(a, c, e), zoom))
        return self._clamp(b)

    @staticmethod
    def _travel(centre: float, zoom: float, extent: float) -> tuple[float, float]:
        """The span a pan's centre sweeps: ``_PAN_TRAVEL`` either side of ``centre``, shifted into range."""
        lo_lim, hi_lim = extent / (2 * zoom), extent - extent / (2 * zoom)
        span = min(hi_lim - lo_lim, 2 * _PAN_TRAVEL * extent)
        lo = min(max(centre - span / 2, lo_lim), hi_lim - span)
        return lo, lo + span

    def _compose_view(self, assets: _ImageAssets, view: _View) -> np.ndarray:
        x0 = view.cx - self.width / (2 * view.zoom)
        y0 = view.cy - self.height / (2 * view.zoom)
        m = _scale_shift(1 / view.zoom, 1 / view.zoom, x0, y0)
        return assets.compose(self._displayed_to_world(m), (self.width, self.height))

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` of the video as seen by this shot. Holds return their shared read-only array."""
        exact_kernels()
        if self.move == "hold":
            return self.still
        view = self._view_at((t - self.visible_start) / max(1, self.visible_len - 1))
        k, (ox, oy) = self.k, self.origin
        x0 = view.cx - self.width / (2 * view.zoom)
        y0 = view.cy - self.height / (2 * view.zoom)
        m = _scale_shift(k / view.zoom, k / view.zoom, k * (x0 - ox), k * (y0 - oy))
        out = _warp(self.canvas, m, (self.width, self.height), cv2.BORDER_REPLICATE)
        if self.watermark is not None:
            self.watermark.apply(out)
        return out


# ----------------------------------------------------------------------------------------------- frames


def fade_half_width(num_shots: int, num_frames: int, fps: int) -> int:
    """Half-length in frames of every cross-fade between ``num_shots`` shots in ``num_frames`` (0: hard cuts).

    ``FADE_SECONDS`` in all when the video has room for it after each shot's ``CLEAN_VIEW_SECONDS`` of clean
    view; with less room the fades are shortened first, down to hard cuts, before any shot's clean view is.

    Why fades are short: a cross-fade frame differs from its neighbours everywhere. Coded as x264 chose by
    itself, each cost 3-5x a still frame (measured at 1080p: 9 shots with 0.5 s fades took 1.7x the encode
    time of the same frame count of stills; hard cuts 1.0x, 0.25 s fades ~1.3-1.5x). The engine now marks
    them as B-frames (see :func:`dissolves`), which makes them cheap, but they still show no shot clearly.
    """
    full = max(0, round(fps * FADE_SECONDS) // 2)
    if num_shots < 2:
        return full
    spare = num_frames - num_shots * _clean_view_frames(fps)
    return max(0, min(full, spare // (2 * (num_shots - 1))))


def _clean_view_frames(fps: int) -> int:
    return max(1, round(fps * CLEAN_VIEW_SECONDS))


def render_frames(
    shots: Sequence[Shot],
    images: Sequence[np.ndarray],
    width: int,
    height: int,
    fps: int,
    num_frames: int,
    *,
    seed: int,
    watermark: bool,
    watermark_text: str = WATERMARK_TEXT,
) -> Iterator[np.ndarray]:
    """Yield exactly ``num_frames`` ``(height, width, 3)`` uint8 RGB frames of the animatic.

    ``images[i]`` is the decoded RGB image of ``[Image i+1]``. Frames of a still shot are the same
    read-only array; every other frame is a new array. Same inputs and seed give identical frames.
    """
    if width <= 0 or height <= 0 or fps <= 0 or num_frames < 0:
        raise ValueError(f"invalid geometry {width}x{height} @ {fps} fps, {num_frames} frames")
    if not shots:
        raise ValueError("render_frames needs at least one shot")
    for shot in shots:
        if not 1 <= shot.image_index <= len(images):
            raise ValueError(f"shot refers to [Image {shot.image_index}] but {len(images)} images were given")
        if any(setup.image_index != shot.image_index for setup in shot.setups):
            raise ValueError("a shot's camera set-ups must show the shot's own image")
    return _frames(shots, images, width, height, fps, num_frames, seed, watermark, watermark_text)


@dataclass(frozen=True)
class Slot:
    """One stretch of the video: ``shot`` shows during ``frames`` (its dissolves included).

    ``shot`` is entry ``ordinal`` of the shot list, or, when that shot is played as its two camera set-ups,
    set-up ``part`` of it (``part`` 0 and 1, joined by a hard cut).
    """

    ordinal: int
    part: int
    shot: Shot
    frames: range


@dataclass(frozen=True)
class _Timeline:
    """Which slot shows when: slot ``i`` of ``plan`` owns frames ``starts[i]`` to ``starts[i + 1] - 1``, and the
    fade between slots ``i`` and ``i + 1`` blends the ``halves[i]`` frames either side of ``starts[i + 1]`` (0
    is a hard cut, as between the two set-ups of one shot)."""

    plan: list[Slot]
    starts: list[int]
    halves: list[int]


def _timeline(shots: Sequence[Shot], num_frames: int, fps: int) -> _Timeline:
    """Frames per shot so that every shot gets a clean view of its image (none of it inside a dissolve).

    ``n`` shots in ``num_frames``: the dissolves take their frames first (``fade_half_width``: full length
    when ``num_frames >= n * CLEAN_VIEW_SECONDS * fps`` plus the dissolves, shorter, down to hard cuts, when
    not), then the rest is shared by the shots' weights with at least ``CLEAN_VIEW_SECONDS`` each. When even
    hard cuts leave less than that, every shot gets an equal share (the few frames over go to the heaviest
    shots), so no reference is dropped for a longer one; with fewer frames than shots, the heaviest show.
    Each shot's frames are its clean share plus its half of each dissolve it takes part in.
    """
    half = fade_half_width(len(shots), num_frames, fps)
    clean = allocate_frames(
        shots, num_frames - 2 * half * max(0, len(shots) - 1), min_frames=_clean_view_frames(fps)
    )
    # A dissolve needs room on both sides, so a fade (half > 0) means every shot got frames.
    shown = [(ordinal, shot, n) for ordinal, (shot, n) in enumerate(zip(shots, clean, strict=True)) if n > 0]
    plan: list[Slot] = []
    halves: list[int] = []
    start = 0
    for k, (ordinal, shot, n) in enumerate(shown):
        if k > 0:
            halves.append(half)
        parts = _setup_frames(shot, n, fps)
        for part, (setup, frames) in enumerate(parts):
            if part > 0:
                halves.append(0)
            if part == 0 and k > 0:
                frames += half
            if part == len(parts) - 1 and k < len(shown) - 1:
                frames += half
            plan.append(Slot(ordinal, part, setup, range(start, start + frames)))
            start += frames
    return _Timeline(plan, [slot.frames.start for slot in plan] + [start], halves)


def _setup_frames(shot: Shot, clean_frames: int, fps: int) -> list[tuple[Shot, int]]:
    """``shot``'s clean frames split between its camera set-ups, or all for the shot itself when they do not
    each get ``MIN_SHOT_SECONDS`` (a flash of a second framing would read as a glitch, not a cut)."""
    least = max(1, round(fps * MIN_SHOT_SECONDS))
    if len(shot.setups) < 2 or clean_frames < least * len(shot.setups):
        return [(shot, clean_frames)]
    counts = allocate_frames(shot.setups, clean_frames, min_frames=least)
    return list(zip(shot.setups, counts, strict=True))


def schedule(shots: Sequence[Shot], num_frames: int, fps: int) -> list[Slot]:
    """What :func:`render_frames` (same arguments) shows when, in order; the slots cover every frame once.

    Shots that get no frames (fewer frames than shots) are left out.
    """
    return _timeline(shots, num_frames, fps).plan


def dissolves(shots: Sequence[Shot], num_frames: int, fps: int) -> list[range]:
    """The frame numbers of each cross-fade of :func:`render_frames` (same arguments), in order.

    Frame ``r.start - 1`` shows the outgoing shot alone and frame ``r.stop`` the incoming one alone; each frame
    in ``r`` mixes those two in proportion to its distance from them in time. (For moving shots the two
    pictures move, so the mix is only close to that.) Hard cuts are not listed.
    """
    tl = _timeline(shots, num_frames, fps)
    return [range(tl.starts[b + 1] - h, tl.starts[b + 1] + h) for b, h in enumerate(tl.halves) if h > 0]


def _frames(
    shots: Sequence[Shot],
    images: Sequence[np.ndarray],
    width: int,
    height: int,
    fps: int,
    num_frames: int,
    seed: int,
    watermark: bool,
    watermark_text: str,
) -> Iterator[np.ndarray]:
    tl = _timeline(shots, num_frames, fps)
    plan, starts, halves = tl.plan, tl.starts, tl.halves
    if not plan:
        return

    # Images are fetched from ``images`` when their first shot is built (the engine's sequence decodes them
    # lazily) and let go after their last shot.
    last_use = {slot.shot.image_index: i for i, slot in enumerate(plan)}
    wm = Watermark(width, height, watermark_text) if watermark else None
    assets: dict[int, _ImageAssets] = {}
    renderers: dict[int, _ShotRenderer] = {}

    def build(i: int) -> _ShotRenderer:
        slot = plan[i]
        shot = slot.shot
        image_assets = assets.get(shot.image_index)
        if image_assets is None:
            image_assets = _ImageAssets(images[shot.image_index - 1], width, height)
            assets[shot.image_index] = image_assets
        before = halves[i - 1] if i > 0 else 0
        after = halves[i] if i < len(halves) else 0
        visible = (starts[i] - before, starts[i + 1] + after)
        # A shot played whole draws the same jitter as it always did; its second set-up draws its own.
        stream = (slot.ordinal,) if slot.part == 0 else (slot.ordinal, slot.part)
        return _ShotRenderer(image_assets, shot, stream, visible, width, height, seed, wm)

    def blend(a: np.ndarray, b: np.ndarray, boundary: int, t: int) -> np.ndarray:
        h = halves[boundary]
        alpha = (t - (starts[boundary + 1] - h) + 1) / (2 * h + 1)
        exact_kernels()
        return cv2.addWeighted(a, 1.0 - alpha, b, alpha, 0.0)

    # The next shot (decode its image, compose it) is built on a helper thread while this one's frames are
    # being encoded: built inline it stalled the encoder for the length of a decode just after the shot
    # started. One thread, so builds never run concurrently with each other.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="animatic-next-shot")
    try:
        pending: dict[int, Future[_ShotRenderer]] = {0: pool.submit(build, 0)}

        def renderer(i: int) -> _ShotRenderer:
            if i not in renderers:
                renderers[i] = pending.pop(i).result()
            return renderers[i]

        for i in range(len(plan)):
            current = renderer(i)
            if i + 1 < len(plan):
                pending[i + 1] = pool.submit(build, i + 1)
            for t in range(starts[i], starts[i + 1]):
                if i > 0 and t < starts[i] + halves[i - 1]:
                    yield blend(renderer(i - 1).frame(t), current.frame(t), i - 1, t)
                elif i < len(halves) and t >= starts[i + 1] - halves[i]:
                    yield blend(current.frame(t), renderer(i + 1).frame(t), i, t)
                else:
                    yield current.frame(t)
            renderers.pop(i - 1, None)
            image_index = plan[i].shot.image_index
            if last_use[image_index] == i:
                # The next shot's build, if still running, uses another image (else this were not the last use).
                assets.pop(image_index, None)
    finally:
        # Stopped early (cancel, error): a build not yet started is dropped, a running one finishes.
        pool.shutdown(wait=True, cancel_futures=True)
