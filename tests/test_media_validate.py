"""Tests for videosynth.media.validate (pure checks on image bytes)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from videosynth.errors import ErrorKind, InvalidImageFormat, InvalidImageResolution, InvalidImageSize
from videosynth.media.validate import (
    ALLOWED_FORMATS,
    MAX_PIXELS,
    MIN_SHORT_SIDE,
    ImageInfo,
    sniff_image_format,
    validate_image,
)


def _encode(fmt: str, size: tuple[int, int], *, noise: bool = False, mode: str = "RGB") -> bytes:
    width, height = size
    if noise:
        rng = np.random.default_rng(1234)
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    else:
        image = Image.new(mode, size, (200, 40, 90) if mode == "RGB" else 7)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height but whose data is a few bytes: no big allocation here."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "mime", "extension"),
    [("JPEG", "image/jpeg", ".jpg"), ("PNG", "image/png", ".png"), ("WEBP", "image/webp", ".webp")],
)
def test_accepts_allowed_formats(fmt: str, mime: str, extension: str) -> None:
    data = _encode(fmt, (640, 480))
    info = validate_image(data)
    assert info == ImageInfo(format=fmt, width=640, height=480, mime=mime, extension=extension)
    assert sniff_image_format(data) == info.format
    assert info.format in ALLOWED_FORMATS


def test_portrait_and_boundary_sizes() -> None:
    assert validate_image(_encode("PNG", (400, 400))).width == 400
    info = validate_image(_encode("PNG", (480, 900)))
    assert (info.width, info.height) == (480, 900)


@pytest.mark.parametrize("size", [(300, 200), (399, 1000), (1000, 399)])
def test_short_side_too_small(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidImageResolution) as info:
        validate_image(_encode("JPEG", size))
    width, height = size
    assert info.value.detail == (
        "The image resolution is invalid, please make sure that the smallest length of image is larger than "
        f"{MIN_SHORT_SIDE}, got {width}x{height}."
    )
    assert info.value.kind is ErrorKind.IMAGE_RESOLUTION


def test_min_short_side_is_configurable() -> None:
    assert validate_image(_encode("PNG", (300, 200)), min_short_side=200).height == 200


@pytest.mark.parametrize(
    "data",
    [
        _encode("GIF", (640, 480), mode="P"),
        _encode("BMP", (640, 480)),
        _encode("TIFF", (640, 480)),
        b"<!DOCTYPE html><html><body>not an image</body></html>",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480"></svg>',
        b"",
        b"\xff\xd8",  # shorter than any magic number
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but not WEBP
    ],
    ids=["gif", "bmp", "tiff", "html", "svg", "empty", "short", "wav"],
)
def test_refuses_other_formats(data: bytes) -> None:
    assert sniff_image_format(data) is None
    with pytest.raises(InvalidImageFormat) as info:
        validate_image(data)
    assert info.value.kind is ErrorKind.IMAGE_FORMAT


def test_magic_must_agree_with_content() -> None:
    # PNG magic in front of a JPEG: Pillow may only try the sniffed format, so this cannot pass as JPEG.
    jpeg = _encode("JPEG", (640, 480))
    with pytest.raises(InvalidImageFormat):
        validate_image(b"\x89PNG\r\n\x1a\n" + jpeg)
    with pytest.raises(InvalidImageFormat):
        validate_image(b"RIFF\x10\x00\x00\x00WEBP" + jpeg)


def test_bomb_header_refused_before_decoding() -> None:
    data = _png_header_only(30000, 30000)
    assert len(data) < 200
    with pytest.raises(InvalidImageResolution, match="too many pixels") as info:
        validate_image(data)
    # A header-only file: decoding would have failed as a format error, so the resolution error shows the
    # pixel count was judged first.
    assert "900000000" in info.value.detail


def test_pixel_cap_is_ours_not_pillows() -> None:
    # 48 MP: under Pillow's default limit (about 89 MP), over our 40 MP cap.
    data = _png_header_only(8000, 6000)
    assert MAX_PIXELS < 8000 * 6000
    with pytest.raises(InvalidImageResolution, match="8000x6000"):
        validate_image(data)
    with pytest.raises(InvalidImageResolution, match="1000x1000"):
        validate_image(_png_header_only(1000, 1000), max_pixels=999_999)


def test_header_passes_but_pixels_missing_is_format_error() -> None:
    # Dimensions are fine, so we get as far as decoding, which must fail cleanly.
    with pytest.raises(InvalidImageFormat, match="Failed to decode"):
        validate_image(_png_header_only(640, 480))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_file(fmt: str) -> None:
    data = _encode(fmt, (640, 480), noise=True)
    truncated = data[: len(data) // 2]
    assert sniff_image_format(truncated) == fmt
    with pytest.raises(InvalidImageFormat):
        validate_image(truncated)


def test_truncated_jpeg_fails_at_decode() -> None:
    data = _encode("JPEG", (640, 480), noise=True)
    with pytest.raises(InvalidImageFormat, match="Failed to decode the image"):
        validate_image(data[: len(data) // 2])


def test_over_max_bytes() -> None:
    data = _encode("PNG", (640, 480))
    with pytest.raises(InvalidImageSize) as info:
        validate_image(data, max_bytes=len(data) - 1)
    assert info.value.kind is ErrorKind.IMAGE_SIZE
    assert validate_image(data, max_bytes=len(data)).format == "PNG"


def test_size_is_checked_before_format() -> None:
    with pytest.raises(InvalidImageSize):
        validate_image(b"GIF89a" + b"\0" * 100, max_bytes=50)


def test_sniff_magic_numbers() -> None:
    assert sniff_image_format(b"\xff\xd8\xff\xe0" + b"\0" * 10) == "JPEG"
    assert sniff_image_format(b"\x89PNG\r\n\x1a\n") == "PNG"
    assert sniff_image_format(b"RIFF\0\0\0\0WEBPVP8 ") == "WEBP"
    assert sniff_image_format(b"\x89PNG\r\n\x1a") is None
    assert sniff_image_format(b"GIF89a") is None
    assert sniff_image_format(b"BM" + b"\0" * 20) is None


def test_no_global_pillow_or_warning_changes() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    validate_image(_encode("PNG", (640, 480)))
    with pytest.raises(InvalidImageResolution):
        validate_image(_png_header_only(30000, 30000))
    assert limit == Image.MAX_IMAGE_PIXELS
    assert warnings.filters == filters


def test_large_max_pixels_does_not_trip_pillow_warning() -> None:
    # 100 MP is over Pillow's default warning threshold; with pytest's warnings-as-errors a leaked
    # DecompressionBombWarning would surface as an exception instead of our own verdict.
    # The short-side rule stops it right after open() (where Pillow warns), so nothing big is allocated.
    with pytest.raises(InvalidImageResolution, match="9500x9500"):
        validate_image(_png_header_only(9500, 9500), max_pixels=200_000_000, min_short_side=10_000)
