"""Output geometry: the resolution tier x aspect ratio table of the wire note (sections 9.1 and 13)."""

from __future__ import annotations

import math

RESOLUTIONS = ("480P", "720P", "1080P")
RATIOS = ("16:9", "9:16", "3:4", "4:3", "4:5", "5:4", "1:1", "9:21", "21:9")
FPS = 24
MIN_DURATION, MAX_DURATION = 3, 15

# 720P and 1080P: the first five ratios are the official Wan 2.7 sizes. 480P: 16:9, 9:16 and 1:1 are the Wan
# 480P sizes. Every other size is equal-area to the tier's 16:9 size: height = sqrt(area / ratio) and
# width = height * ratio, each rounded to a multiple of 16 (see test_sizes), because HappyHorse publishes
# no pixel table.
FRAME_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("480P", "16:9"): (832, 480),
    ("480P", "9:16"): (480, 832),
    ("480P", "1:1"): (624, 624),
    ("480P", "4:3"): (720, 544),
    ("480P", "3:4"): (544, 720),
    ("480P", "4:5"): (560, 704),
    ("480P", "5:4"): (704, 560),
    ("480P", "9:21"): (416, 960),
    ("480P", "21:9"): (960, 416),
    ("720P", "16:9"): (1280, 720),
    ("720P", "9:16"): (720, 1280),
    ("720P", "1:1"): (960, 960),
    ("720P", "4:3"): (1104, 832),
    ("720P", "3:4"): (832, 1104),
    ("720P", "4:5"): (864, 1072),
    ("720P", "5:4"): (1072, 864),
    ("720P", "9:21"): (624, 1472),
    ("720P", "21:9"): (1472, 624),
    ("1080P", "16:9"): (1920, 1080),
    ("1080P", "9:16"): (1080, 1920),
    ("1080P", "1:1"): (1440, 1440),
    ("1080P", "4:3"): (1648, 1248),
    ("1080P", "3:4"): (1248, 1648),
    ("1080P", "4:5"): (1280, 1616),
    ("1080P", "5:4"): (1616, 1280),
    ("1080P", "9:21"): (944, 2192),
    ("1080P", "21:9"): (2192, 944),
}


def frame_size(resolution: str, ratio: str) -> tuple[int, int]:
    """(width, height) in pixels for a resolution tier and ratio."""
    return FRAME_SIZES[(resolution, ratio)]


def tier(resolution: str) -> int:
    """The tier's nominal height: 480, 720 or 1080."""
    return int(resolution.rstrip("P"))


def size_of(
    width: int, height: int, resolutions: tuple[str, ...], ratios: tuple[str, ...]
) -> tuple[str, str] | None:
    """The ``(resolution, ratio)`` of the table whose frame is exactly ``width`` x ``height``, among the
    tiers and ratios given; None when no entry is."""
    for (resolution, ratio), size in FRAME_SIZES.items():
        if size == (width, height) and resolution in resolutions and ratio in ratios:
            return resolution, ratio
    return None


def nearest_size(
    width: int, height: int, resolutions: tuple[str, ...], ratios: tuple[str, ...]
) -> tuple[str, str]:
    """The ``(resolution, ratio)`` closest to a frame of ``width`` x ``height``: the ratio nearest in shape
    (by the logarithm of width / height, so 2:1 and 1:2 are as far from 1:1), then, at that ratio, the tier
    nearest in pixel count (by the logarithm of the area)."""
    shape = math.log(width / height)
    ratio = min(ratios, key=lambda r: abs(math.log(_ratio_value(r)) - shape))
    area = math.log(width * height)
    resolution = min(
        resolutions,
        key=lambda res: abs(math.log(FRAME_SIZES[(res, ratio)][0] * FRAME_SIZES[(res, ratio)][1]) - area),
    )
    return resolution, ratio


def _ratio_value(ratio: str) -> float:
    w, _, h = ratio.partition(":")
    return int(w) / int(h)
