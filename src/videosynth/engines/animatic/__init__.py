"""The animatic engine: a deterministic, CPU-only storyboard renderer (not a generative model).

Public pieces: :class:`AnimaticEngine` (the :class:`videosynth.engines.base.Engine`), :func:`parse_shots` /
:func:`allocate_frames` / :class:`Shot` (prompt to shots), :func:`schedule` (shots to a timeline) and
:func:`render_frames` (shots to frames).
"""

from __future__ import annotations

from videosynth.engines.animatic.engine import AnimaticEngine, picture_hints
from videosynth.engines.animatic.render import (
    Slot,
    dissolves,
    render_frames,
    schedule,
    shot_zoom,
    watermark_box,
)
from videosynth.engines.animatic.shots import Shot, allocate_frames, parse_directions, parse_shots
from videosynth.media.images import load_reference

__all__ = [
    "AnimaticEngine",
    "Shot",
    "Slot",
    "allocate_frames",
    "dissolves",
    "load_reference",
    "parse_directions",
    "parse_shots",
    "picture_hints",
    "render_frames",
    "schedule",
    "shot_zoom",
    "watermark_box",
]
