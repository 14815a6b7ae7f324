"""Engine name -> engine. Heavy engines are imported here, lazily, and nowhere else.

An engine is a :class:`~videosynth.engines.base.FrameEngine`, a :class:`~videosynth.engines.base.FileEngine`
or (built-in only: ``RELAY_ENGINES``) a :class:`~videosynth.engines.base.RelayEngine`; a plug-in that is
neither of the first two is refused when it is built.

A name is a built-in engine (``ENGINES``) or ``package.module:Factory``: an engine of your own,
importable in the worker, whose factory takes the validated options as keyword arguments and may declare
them as a tuple of :class:`~videosynth.engines.options.Option` in its ``OPTIONS`` attribute.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

from videosynth.engines.base import Engine, FileEngine, FrameEngine, RelayEngine
from videosynth.engines.options import Option, OptionsError, validate
from videosynth.errors import EngineError

ENGINES = ("animatic", "wan-vace", "minimax-h3", "dashscope")
#: Engines that forward tasks to an upstream service: the worker runs them itself, many tasks at once,
#: instead of one task at a time in its engine process.
RELAY_ENGINES = ("dashscope",)
#: Engines whose videos have a soundtrack (``Frames.audio``); a plug-in says so with ``MAKES_AUDIO = True``.
AUDIO_ENGINES = ("minimax-h3",)


def is_relay(name: str) -> bool:
    return name in RELAY_ENGINES


def _plugin(name: str) -> Callable[..., Engine]:
    module_name, _, attribute = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"engine {name!r} cannot be imported: {exc}") from exc
    return cast(Callable[..., Engine], factory)


def makes_audio(name: str) -> bool:
    """Whether ``name``'s videos carry sound (what ``GET /api/v1/models`` tells clients)."""
    if name in AUDIO_ENGINES:
        return True
    if name in ENGINES or not is_known(name):
        return False
    return bool(getattr(_plugin(name), "MAKES_AUDIO", False))


def is_known(name: str) -> bool:
    return name in ENGINES or (":" in name and all(name.partition(":")[::2]))


def engine_options(name: str) -> tuple[Option, ...]:
    """The options ``name`` declares; raises EngineError for an unknown engine."""
    if name == "animatic":
        from videosynth.engines.animatic.options import OPTIONS

        return OPTIONS
    if name == "wan-vace":
        from videosynth.engines.wan_vace.options import OPTIONS as WAN_VACE_OPTIONS

        return WAN_VACE_OPTIONS
    if name == "minimax-h3":
        from videosynth.engines.minimax_h3.options import OPTIONS as MINIMAX_H3_OPTIONS

        return MINIMAX_H3_OPTIONS
    if name == "dashscope":
        from videosynth.engines.dashscope.options import OPTIONS as DASHSCOPE_OPTIONS

        return DASHSCOPE_OPTIONS
    if is_known(name):
        return tuple(getattr(_plugin(name), "OPTIONS", ()))
    raise EngineError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}, or package.module:Factory")


def check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``name`` is built with; raises OptionsError or EngineError."""
    values = validate(name, engine_options(name), options)
    if name == "wan-vace":
        from videosynth.engines.wan_vace.options import check

        check(values)
    if name == "minimax-h3":
        from videosynth.engines.minimax_h3.options import check as check_minimax_h3

        check_minimax_h3(values)
    return values


def create_engine(
    name: str, options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Engine:
    """Build ``name`` with ``options``; ``environ`` is where an engine finds the credentials its options
    name (a relay's ``api_key_env``), handed down from the edge, which alone reads the environment."""
    try:
        values = check_options(name, options or {})
    except OptionsError as exc:
        raise EngineError(str(exc)) from exc
    if name == "animatic":
        from videosynth.engines.animatic.engine import AnimaticEngine

        return AnimaticEngine(**values)
    if name == "wan-vace":
        try:
            from videosynth.engines.wan_vace.engine import WanVaceEngine
        except ImportError as exc:
            raise EngineError(
                f"engine 'wan-vace' needs the [gpu] extra (pip install 'videosynth[gpu]'): {exc}"
            ) from exc
        return WanVaceEngine(**values)
    if name == "minimax-h3":
        try:
            from videosynth.engines.minimax_h3.engine import MiniMaxH3Engine
        except ImportError as exc:
            raise EngineError(
                f"engine 'minimax-h3' needs the [gpu] extra (pip install 'videosynth[gpu]'): {exc}"
            ) from exc
        return MiniMaxH3Engine(**values)
    if name == "dashscope":
        from videosynth.engines.dashscope.engine import DashScopeRelay

        relay: RelayEngine = DashScopeRelay(**values, environ=environ or {})
        return relay
    engine = _plugin(name)(**values)
    if not isinstance(engine, (FrameEngine, FileEngine)):
        raise EngineError(
            f"engine {name!r} is neither a frame engine (name, frames(), warm_up())"
            " nor a file engine (name, write_video(), warm_up())"
        )
    return engine
