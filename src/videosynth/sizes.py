"""Output geometry: the resolution tier x aspect ratio table of the wire note (section 9.1)."""

from __future__ import annotations

RESOLUTIONS = ("720P", "1080P")
RATIOS = ("16:9", "9:16", "3:4", "4:3", "4:5", "5:4", "1:1", "9:21", "21:9")
FPS = 24
MIN_DURATION, MAX_DURATION = 3, 15

# The first five columns are the official Wan 2.7 sizes; the last four are equal-area sizes rounded
# to multiples of 16, because HappyHorse publishes no pixel table for them.
FRAME_SIZES: dict[tuple[str, str], tuple[int, int]] = {
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


def frame_count(duration_s: int, fps: int = FPS) -> int:
    return duration_s * fps


def tier(resolution: str) -> int:
    """The ``usage.SR`` value: 720 or 1080."""
    return int(resolution.rstrip("P"))
