"""Check that downloaded bytes are an acceptable reference image (pure: no I/O besides decoding).

Checks run cheapest first and the pixel count is judged from the header before any pixel is decoded, so a
small file declaring a huge canvas (decompression bomb) costs microseconds, not gigabytes.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image

from videosynth.errors import InvalidImageFormat, InvalidImageResolution, InvalidImageSize

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_PIXELS",
    "MIN_SHORT_SIDE",
    "ImageInfo",
    "decode_failure",
    "sniff_image_format",
    "validate_image",
]

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
MIN_SHORT_SIDE = 400
MAX_PIXELS = 40_000_000  # decompression-bomb cap, checked from the header BEFORE decoding pixels
DEFAULT_MAX_BYTES = 20 * 1024 * 1024

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_EXTENSION = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FORMAT_MESSAGE = "Invalid file format, the image must be JPEG, PNG or WEBP"


@dataclass(frozen=True)
class ImageInfo:
    """What validation learned about an accepted image."""

    format: str  # "JPEG" | "PNG" | "WEBP"
    width: int
    height: int
    mime: str  # "image/jpeg" ...
    extension: str  # ".jpg" | ".png" | ".webp"


def sniff_image_format(data: bytes) -> str | None:
    """Return "JPEG", "PNG" or "WEBP" from the magic bytes alone, or None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == _PNG_SIGNATURE:
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _size_limit_text(max_bytes: int) -> str:
    mb = max_bytes / (1024 * 1024)
    return f"{mb:g}MB" if mb >= 1 else f"{max_bytes} bytes"


def decode_failure(
    image_format: str, width: int, height: int, exc: BaseException, *, index: int | None = None
) -> InvalidImageFormat:
    """The error for an image whose header was fine but whose pixel data cannot be decoded.

    ``index`` names the image as the prompt does (``[Image N]``) when the caller knows it."""
    which = f" [Image {index}]" if index is not None else ""
    return InvalidImageFormat(
        f"Failed to decode the image{which} ({image_format}, {width}x{height}): {str(exc)[:200]}"
    )


def validate_image(
    data: bytes,
    *,
    min_short_side: int = MIN_SHORT_SIDE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    decode: bool = True,
) -> ImageInfo:
    """Validate an image's bytes and return its format and size.

    Order: byte size (InvalidImageSize) -> magic bytes (InvalidImageFormat) -> header parse restricted to the
    sniffed format (InvalidImageFormat) -> ``width*height <= max_pixels`` (InvalidImageResolution, before any
    decoding) -> short side ``>= min_short_side`` (InvalidImageResolution) -> full decode (InvalidImageFormat
    for truncated or corrupt data), skipped with ``decode=False``.

    The worker passes ``decode=False``: engines decode the pixels anyway, and report an image that fails
    to decode with :func:`decode_failure` (the same error as here), so the pixels are decoded once.
    """
    if len(data) > max_bytes:
        raise InvalidImageSize(
            f"Invalid file size. The image file size must be less than {_size_limit_text(max_bytes)}, "
            f"got {len(data)} bytes."
        )
    sniffed = sniff_image_format(data)
    if sniffed is None:
        raise InvalidImageFormat(f"{_FORMAT_MESSAGE}.")

    # Our own pixel check is the authority; Pillow's global MAX_IMAGE_PIXELS (which other code may change)
    # must neither let a bomb through nor turn into a warning-as-error for a size we accept. The filter
    # change is scoped to this block.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            # Only the sniffed format may open it, so the magic bytes and Pillow's verdict cannot disagree.
            image = Image.open(io.BytesIO(data), formats=[sniffed])
        except Image.DecompressionBombError as exc:
            # Pillow refuses canvases over 2x its global limit inside open(), before we see the size; its
            # message carries the pixel count.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            got = f"{found.group(1)} pixels" if found else "an oversized canvas"
            raise InvalidImageResolution(
                f"The image resolution is invalid, the image has too many pixels, got {got} "
                f"(at most {max_pixels} pixels)."
            ) from exc
        except Exception as exc:  # untrusted input: any parser failure is invalid
            raise InvalidImageFormat(f"{_FORMAT_MESSAGE}; the {sniffed} header cannot be read.") from exc
        with image:
            if image.format != sniffed:  # pragma: no cover - formats=[sniffed] already guarantees this
                raise InvalidImageFormat(f"{_FORMAT_MESSAGE}.")
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImageResolution(
                    f"The image resolution is invalid, the image has too many pixels, got {width}x{height} "
                    f"(at most {max_pixels} pixels)."
                )
            if min(width, height) < min_short_side:
                raise InvalidImageResolution(
                    "The image resolution is invalid, please make sure that the smallest length of image is "
                    f"larger than {min_short_side}, got {width}x{height}."
                )
            if decode:
                try:
                    image.load()
                except Exception as exc:  # truncated data, bad CRC, decoder errors: all mean an unusable file
                    raise decode_failure(sniffed, width, height, exc) from exc
    return ImageInfo(
        format=sniffed, width=width, height=height, mime=_MIME[sniffed], extension=_EXTENSION[sniffed]
    )
