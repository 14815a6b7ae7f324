"""Engine name -> engine. Heavy engines are imported here, lazily, and nowhere else."""

from __future__ import annotations

from videosynth.engines.base import Engine
from videosynth.errors import EngineError

ENGINES = ("animatic",)


def create_engine(name: str) -> Engine:
    if name == "animatic":
        from videosynth.engines.animatic.engine import AnimaticEngine

        return AnimaticEngine()
    raise EngineError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")
