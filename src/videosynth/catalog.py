"""The model registry: which public model names exist, which engine serves them, and their limits."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videosynth import sizes
from videosynth.engines.options import OptionsError, shown
from videosynth.engines.registry import check_options, engine_options, makes_audio
from videosynth.errors import EngineError, ModelNotFound

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

    def shown_options(self) -> dict[str, Any]:
        """The engine options as anyone may see them (secrets masked)."""
        try:
            return shown(engine_options(self.engine), self.options)
        except EngineError:
            return {k: "***" for k in self.options}

    def describe(self) -> dict[str, Any]:
        """The ``GET /api/v1/models`` entry."""
        return {
            "model": self.name,
            "engine": self.engine,
            "options": self.shown_options(),
            "description": self.description,
            "task": "reference-to-video",
            # An extension: whether the MP4 has a soundtrack (HappyHorse's videos do; most open models' do not).
            "audio": makes_audio(self.engine),
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
    "wan-vace": "Wan VACE reference-to-video (diffusers WanVACEPipeline) on this server's GPUs.",
}


class ModelsFileError(ValueError):
    """A models file that cannot be used; the message names the file, the model and the key."""


# Keys of a model's table that are ours; every other key is the engine's own option.
_MODEL_KEYS = (
    "engine",
    "description",
    "resolutions",
    "ratios",
    "durations",
    "references",
    "default_resolution",
    "default_ratio",
    "default_duration",
    "default_watermark",
)


class Catalog:
    def __init__(self, models: dict[str, ModelSpec]) -> None:
        self._models = dict(models)

    @classmethod
    def from_file(cls, path: Path) -> Catalog:
        """One table per public model name: ``[models."happyhorse-1.1-r2v"]``; see ``examples/models.toml``."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ModelsFileError(f"{path}: cannot be read ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ModelsFileError(f"{path}: not valid TOML: {exc}") from None
        extra = sorted(set(data) - {"models"})
        if extra:
            raise ModelsFileError(f'{path}: unknown top-level key {extra[0]!r} (only [models."NAME"] tables)')
        models = data.get("models")
        if not isinstance(models, dict) or not models:
            raise ModelsFileError(f'{path}: no models; add a [models."NAME"] table with engine = "..."')
        specs = {}
        for name, table in models.items():
            where = f'{path}: models."{name}"'
            if not isinstance(table, dict):
                raise ModelsFileError(f"{where}: must be a table")
            try:
                specs[name] = _model_spec(name, table)
            except (OptionsError, EngineError, ValueError) as exc:
                raise ModelsFileError(f"{where}: {exc}") from None
        return cls(specs)

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
                    options=_default_options(eng),
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


def _default_options(engine: str) -> dict[str, Any]:
    try:
        return check_options(engine, {})
    except (EngineError, OptionsError):  # an engine this build lacks, or one whose options are all required
        return {}


def _pair(table: dict[str, Any], key: str, low: int, high: int, default: tuple[int, int]) -> tuple[int, int]:
    value = table.get(key, list(default))
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or not low <= value[0] <= value[1] <= high
    ):
        raise ValueError(f"{key} must be [min, max] with {low} <= min <= max <= {high}, got {value!r:.60}")
    return value[0], value[1]


def _subset(table: dict[str, Any], key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    value = table.get(key, list(allowed))
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v in allowed for v in value)
    ):
        raise ValueError(f"{key} must be a non-empty list of {', '.join(allowed)}, got {value!r:.80}")
    return tuple(v for v in allowed if v in value)


def _model_spec(name: str, table: dict[str, Any]) -> ModelSpec:
    engine = table.get("engine")
    if not isinstance(engine, str) or not engine:
        raise ValueError('needs engine = "..." (for example "animatic")')
    options = check_options(engine, {k: v for k, v in table.items() if k not in _MODEL_KEYS})
    resolutions = _subset(table, "resolutions", sizes.RESOLUTIONS)
    ratios = _subset(table, "ratios", sizes.RATIOS)
    min_duration, max_duration = _pair(
        table, "durations", sizes.MIN_DURATION, sizes.MAX_DURATION, (sizes.MIN_DURATION, sizes.MAX_DURATION)
    )
    min_refs, max_refs = _pair(table, "references", 1, 9, (1, 9))
    defaults = {
        "default_resolution": table.get(
            "default_resolution", "1080P" if "1080P" in resolutions else resolutions[-1]
        ),
        "default_ratio": table.get("default_ratio", "16:9" if "16:9" in ratios else ratios[0]),
        "default_duration": table.get("default_duration", min(max(5, min_duration), max_duration)),
        "default_watermark": table.get("default_watermark", True),
    }
    if defaults["default_resolution"] not in resolutions:
        raise ValueError(f"default_resolution {defaults['default_resolution']!r:.20} is not in resolutions")
    if defaults["default_ratio"] not in ratios:
        raise ValueError(f"default_ratio {defaults['default_ratio']!r:.20} is not in ratios")
    duration = defaults["default_duration"]
    if (
        not isinstance(duration, int)
        or isinstance(duration, bool)
        or not min_duration <= duration <= max_duration
    ):
        raise ValueError(f"default_duration must be an integer within durations, got {duration!r:.20}")
    if not isinstance(defaults["default_watermark"], bool):
        raise ValueError("default_watermark must be true or false")
    description = table.get("description", ENGINE_DESCRIPTIONS.get(engine, f"served by the {engine} engine"))
    if not isinstance(description, str):
        raise ValueError("description must be a string")
    return ModelSpec(
        name=name,
        engine=engine,
        description=description,
        resolutions=resolutions,
        ratios=ratios,
        min_duration=min_duration,
        max_duration=max_duration,
        min_references=min_refs,
        max_references=max_refs,
        default_resolution=defaults["default_resolution"],
        default_ratio=defaults["default_ratio"],
        default_duration=duration,
        default_watermark=defaults["default_watermark"],
        options=options,
    )
