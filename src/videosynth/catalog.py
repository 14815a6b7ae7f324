"""The model registry: which public model names exist, which engine serves them, and their limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from videosynth import sizes
from videosynth.errors import ModelNotFound

HAPPYHORSE_R2V_MODELS = ("happyhorse-1.0-r2v", "happyhorse-1.1-r2v")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    engine: str
    description: str
    resolutions: tuple[str, ...] = sizes.RESOLUTIONS
    ratios: tuple[str, ...] = sizes.RATIOS
    min_duration: int = sizes.MIN_DURATION
    max_duration: int = sizes.MAX_DURATION
    min_references: int = 1
    max_references: int = 9
    default_resolution: str = "1080P"
    default_ratio: str = "16:9"
    default_duration: int = 5
    default_watermark: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The ``GET /api/v1/models`` entry."""
        return {
            "model": self.name,
            "engine": self.engine,
            "description": self.description,
            "task": "reference-to-video",
            "references": {"min": self.min_references, "max": self.max_references},
            "durations": list(range(self.min_duration, self.max_duration + 1)),
            "fps": sizes.FPS,
            "defaults": {
                "resolution": self.default_resolution,
                "ratio": self.default_ratio,
                "duration": self.default_duration,
                "watermark": self.default_watermark,
            },
            "sizes": [
                {
                    "resolution": res,
                    "ratio": ratio,
                    "width": sizes.frame_size(res, ratio)[0],
                    "height": sizes.frame_size(res, ratio)[1],
                }
                for res in self.resolutions
                for ratio in self.ratios
            ],
        }


ENGINE_DESCRIPTIONS = {
    "animatic": "CPU animatic: a deterministic storyboard render of the reference images following the "
    "prompt's shot directions. Not a generative model.",
}


class Catalog:
    def __init__(self, models: dict[str, ModelSpec]) -> None:
        self._models = dict(models)

    @classmethod
    def default(cls, engine: str, routes: str = "") -> Catalog:
        """The happyhorse r2v models on ``engine``, plus ``routes``: ``model=engine,model=engine``.

        A route may re-point a happyhorse model (a GPU pool for 1.1, say) or add a model name."""
        mapping = {name: engine for name in HAPPYHORSE_R2V_MODELS}
        for item in routes.split(","):
            if not item.strip():
                continue
            name, sep, target = item.partition("=")
            if not sep or not name.strip() or not target.strip():
                raise ValueError(f"bad model route {item!r}; use model=engine")
            mapping[name.strip()] = target.strip()
        return cls(
            {
                name: ModelSpec(
                    name=name,
                    engine=eng,
                    description=ENGINE_DESCRIPTIONS.get(eng, f"served by the {eng} engine"),
                )
                for name, eng in mapping.items()
            }
        )

    def get(self, name: str) -> ModelSpec:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound() from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._models.values())

    def names(self) -> list[str]:
        return list(self._models)
