"""The resolution x ratio table: 27 exact sizes, written out here so a change to the table is a visible diff."""

from __future__ import annotations

import math

import pytest

from videosynth import sizes

EXPECTED = {
    "480P": {"16:9": (832, 480), "9:16": (480, 832), "1:1": (624, 624), "4:3": (720, 544), "3:4": (544, 720),
             "4:5": (560, 704), "5:4": (704, 560), "9:21": (416, 960), "21:9": (960, 416)},
    "720P": {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (960, 960), "4:3": (1104, 832), "3:4": (832, 1104),
             "4:5": (864, 1072), "5:4": (1072, 864), "9:21": (624, 1472), "21:9": (1472, 624)},
    "1080P": {"16:9": (1920, 1080), "9:16": (1080, 1920), "1:1": (1440, 1440), "4:3": (1648, 1248),
              "3:4": (1248, 1648), "4:5": (1280, 1616), "5:4": (1616, 1280), "9:21": (944, 2192),
              "21:9": (2192, 944)},
}  # fmt: skip
# Published sizes (Wan 2.7 for 720P/1080P, the Wan 480P sizes); the rest follow the equal-area rule.
PUBLISHED = {("480P", r) for r in ("16:9", "9:16", "1:1")} | {
    (t, r) for t in ("720P", "1080P") for r in ("16:9", "9:16", "1:1", "4:3", "3:4")
}


def test_the_table_has_all_27_sizes_exactly() -> None:
    assert set(sizes.RESOLUTIONS) == set(EXPECTED)
    assert set(sizes.RATIOS) == set(EXPECTED["720P"])
    assert {(t, r): wh for t, row in EXPECTED.items() for r, wh in row.items()} == sizes.FRAME_SIZES
    assert len(sizes.FRAME_SIZES) == 27


@pytest.mark.parametrize("key", sorted(set(sizes.FRAME_SIZES) - PUBLISHED))
def test_unpublished_sizes_are_equal_area_multiples_of_16(key: tuple[str, str]) -> None:
    tier, ratio = key
    width, height = sizes.FRAME_SIZES[key]
    w, h = (int(x) for x in ratio.split(":"))
    assert width % 16 == 0 and height % 16 == 0
    assert abs(width * height / math.prod(EXPECTED[tier]["16:9"]) - 1) < 0.03
    # As close to the ratio as a multiple of 16 allows.
    assert abs(width - height * w / h) <= 16
    assert sizes.FRAME_SIZES[(tier, f"{h}:{w}")] == (height, width)


def test_tiers() -> None:
    assert [sizes.tier(t) for t in sizes.RESOLUTIONS] == [480, 720, 1080]
