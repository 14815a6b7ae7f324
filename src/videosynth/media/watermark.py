"""The watermark a request asks for (``watermark: true``): the same text patch for every engine."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


class Watermark:
    """A pre-rendered, semi-transparent text patch for the bottom-right corner."""

    def __init__(self, width: int, height: int, label: str) -> None:
        size = max(10, round(min(width, height) * 0.03))
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = (int(v) for v in font.getbbox(label))
        shadow = max(1, size // 14)
        pw, ph = right - left + shadow + 2, bottom - top + shadow + 2
        text = Image.new("RGBA", (pw, ph), (0, 0, 0, 0))
        ImageDraw.Draw(text).text((1 - left, 1 - top), label, font=font, fill=(255, 255, 255, 170))
        under = Image.new("RGBA", (pw, ph), (0, 0, 0, 0))
        # A soft dark shadow keeps the text legible on white.
        ImageDraw.Draw(under).text(
            (1 - left + shadow, 1 - top + shadow), label, font=font, fill=(0, 0, 0, 110)
        )
        patch = np.asarray(Image.alpha_composite(under, text))
        margin = max(4, round(min(width, height) * 0.025))
        pw, ph = min(pw, width), min(ph, height)
        patch = patch[:ph, :pw]
        self.x0 = max(0, width - margin - pw)
        self.y0 = max(0, height - margin - ph)
        self.x1, self.y1 = self.x0 + pw, self.y0 + ph
        alpha = patch[..., 3:4].astype(np.uint16)
        self._inv_alpha = (255 - alpha).astype(np.uint16)
        self._premult = patch[..., :3].astype(np.uint16) * alpha + 127  # +127 rounds the division below

    def apply(self, frame: np.ndarray) -> None:
        """Blend the patch into ``frame`` in place (the caller owns ``frame``)."""
        region = frame[self.y0 : self.y1, self.x0 : self.x1]
        region[...] = ((region * self._inv_alpha + self._premult) // 255).astype(np.uint8)
