"""Reference images decoded for an engine: upright, opaque RGB, no larger than needed."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from videosynth.media.opencv import exact_kernels

# EXIF orientations that swap width and height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112
# Shrink a decoded image only when it is clearly larger than needed (see load_reference).
_RESIZE_BELOW = 0.75


def load_reference(path: Path, max_width: int, max_height: int) -> np.ndarray:
    """Decode an image file to an upright RGB uint8 array that fits in ``max_width x max_height``.

    EXIF orientation is applied; transparency is flattened onto white. A larger image is shrunk (keeping its
    aspect ratio) as early as possible: a JPEG decodes at a reduced DCT scale, so a 24 MP photo never exists
    at full size in memory. An image at most a third larger than the box is kept as decoded: the renderer
    resamples every shot from the source anyway, and a resize here would cost more than it saves.
    """
    with Image.open(path) as opened:
        im: Image.Image = opened
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        box_w, box_h = max_width, max_height
        if orientation in _TRANSPOSED_ORIENTATIONS:
            box_w, box_h = box_h, box_w
        iw, ih = im.size
        scale = min(box_w / iw, box_h / ih)
        if scale < 1.0:
            # draft() only ever picks a size >= the one asked for, so the image still covers the box.
            im.draft("RGB", (max(1, math.ceil(iw * scale)), max(1, math.ceil(ih * scale))))
        im.load()
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        if _has_alpha(im):
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        array = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
    ih, iw = array.shape[:2]
    scale = min(max_width / iw, max_height / ih)
    if scale < _RESIZE_BELOW:
        size = (max(1, round(iw * scale)), max(1, round(ih * scale)))
        # OpenCV's area average: about 10x faster than Pillow's bicubic here, and alias-free when shrinking.
        exact_kernels()
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
    return array


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
