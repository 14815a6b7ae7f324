"""The animatic's options (kept apart from the engine so that reading them imports nothing heavy)."""

from __future__ import annotations

from videosynth.engines.options import Option

WATERMARK_TEXT = "videosynth animatic"

OPTIONS = (
    Option(
        "watermark_text",
        str,
        WATERMARK_TEXT,
        "text of the watermark drawn when a request asks for one",
    ),
)
