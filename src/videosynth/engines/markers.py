"""How a prompt names its reference images: ``[Image 1]`` and the forms clients write for it.

Shared by the engines: the animatic cuts its shots at them, a diffusion engine rewrites them into words its
text encoder knows.
"""

from __future__ import annotations

import re

# Brackets and the word may be full-width or Chinese; ``character1`` is the Wan 2.6 form.
REFERENCE_MARKER = re.compile(
    r"[\[【［]\s*(?:image|img|ｉｍａｇｅ|图片|图像|图)\s*(\d{1,3})\s*[\]】］]|\bcharacter(\d{1,3})\b",
    re.IGNORECASE,
)


def marker_number(match: re.Match[str]) -> int:
    """The image number a :data:`REFERENCE_MARKER` match names (0 for an absurdly long one)."""
    digits = match.group(1) or match.group(2)
    # int() refuses numbers of more than 4300 digits; no image number is longer than a few.
    return int(digits) if len(digits) <= 6 else 0
