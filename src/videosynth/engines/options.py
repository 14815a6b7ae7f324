"""Engine options: each engine declares the keys it takes, so a models file is checked at start.

A models file gives each model an engine and that engine's own keys (a weights directory, a step count,
an upstream URL). The engine declares them as :class:`Option`; :func:`validate` turns what the file says
into the keyword arguments the engine is built with, or raises :class:`OptionsError` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REQUIRED: Any = object()


class OptionsError(ValueError):
    """An engine option that is unknown, missing or of the wrong kind."""


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # str, int, float or bool
    default: Any = REQUIRED
    help: str = ""
    #: never shown (``GET /api/v1/models``, ``videosynth models``): credentials
    secret: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None

    def check(self, value: Any) -> Any:
        kind = self.kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise OptionsError(f"{self.name} must be {_kind_name(kind)}, got {value!r:.60}")
        if self.choices is not None and value not in self.choices:
            raise OptionsError(
                f"{self.name} must be one of {', '.join(map(repr, self.choices))}, got {value!r:.60}"
            )
        number: Any = value  # a number when a bound is declared (the kind says so)
        if self.minimum is not None and number < self.minimum:
            raise OptionsError(f"{self.name} must be at least {self.minimum:g}, got {value!r}")
        if self.maximum is not None and number > self.maximum:
            raise OptionsError(f"{self.name} must be at most {self.maximum:g}, got {value!r}")
        return value


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def validate(engine: str, declared: Sequence[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's keyword arguments: every declared option, from ``given`` or its default."""
    by_name = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        takes = ", ".join(sorted(by_name)) or "no options"
        raise OptionsError(f"unknown key {unknown[0]!r} for engine {engine!r} (it takes: {takes})")
    values: dict[str, Any] = {}
    for option in declared:
        if option.name in given:
            values[option.name] = option.check(given[option.name])
        elif option.default is REQUIRED:
            raise OptionsError(
                f"engine {engine!r} needs {option.name!r}" + (f" ({option.help})" if option.help else "")
            )
        else:
            values[option.name] = option.default
    return values


def shown(declared: Sequence[Option], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as they may be shown to anyone: secrets masked."""
    secret = {o.name for o in declared if o.secret}
    return {k: ("***" if k in secret else v) for k, v in values.items()}
