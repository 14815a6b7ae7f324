"""The minimax-h3 engine's options (kept apart from the engine: reading them imports neither torch nor diffusers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from videosynth.engines.options import Option, OptionsError

WATERMARK_TEXT = "videosynth minimax-h3"
# A torch device as a models file may name one.
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
_TEXT_ENCODER_OFFLOAD = "text-encoder:"

OPTIONS = (
    Option(
        "model_dir",
        str,
        help="a diffusers modular layout (modular_model_index.json), e.g. MiniMaxAI/MiniMax-H3 downloaded",
    ),
    Option(
        "steps",
        int,
        50,
        "sigma grid points, the terminal one included: N runs the transformer N - 1 times"
        " (diffusers' default 50; an 8-step turbo LoRA: 9)",
        minimum=2,
    ),
    Option(
        "max_area",
        int,
        0,
        "pixels of the generated frames before the final resize (0: the model's canvas, 768x1344 at most)",
        minimum=0,
    ),
    Option("flow_shift", float, 0.0, "video scheduler shift (0: the checkpoint's, 12)", minimum=0),
    Option("audio_flow_shift", float, 0.0, "audio scheduler shift (0: the checkpoint's, 3)", minimum=0),
    Option(
        "lora_path",
        str,
        "",
        "a turbo (step-distillation) LoRA for transformer_ref, .safetensors or a directory (empty: none)",
    ),
    Option("lora_scale", float, 1.0, "strength the LoRA is fused with", minimum=0),
    Option(
        "offload",
        str,
        "none",
        'memory placement: "none" (all on device), "model" (ComponentsManager auto CPU offload, for one'
        ' 80 GB card; every weight stays in host RAM, about 130 GB) or "text-encoder:<device>" (the Qwen3-VL'
        " conditioner on another device, e.g. cuda:1)",
    ),
    Option("device", str, "cuda", "torch device: cuda, cuda:N or cpu"),
    Option("dtype", str, "bfloat16", "weights dtype", choices=("bfloat16", "float32")),
    Option("cpu_threads", int, 0, "torch CPU threads (0: torch's default)", minimum=0),
    Option("watermark_text", str, WATERMARK_TEXT, "text of the watermark drawn when a request asks for one"),
)


def text_encoder_device(offload: str) -> str | None:
    """The device ``offload = "text-encoder:<device>"`` names; None for the other modes."""
    return offload.removeprefix(_TEXT_ENCODER_OFFLOAD) if offload.startswith(_TEXT_ENCODER_OFFLOAD) else None


def check(values: Mapping[str, Any]) -> None:
    """The checks the declarations cannot express; the registry runs them when a models file is read."""
    if not _DEVICE.fullmatch(values["device"]):
        raise OptionsError(f"device must be cpu, cuda or cuda:N, got {values['device']!r:.60}")
    offload = values["offload"]
    other = text_encoder_device(offload)
    if offload not in ("none", "model") and other is None:
        raise OptionsError(f'offload must be "none", "model" or "text-encoder:<device>", got {offload!r:.60}')
    if offload == "model" and values["device"] == "cpu":
        raise OptionsError(
            'offload = "model" moves components onto a CUDA device: device must be cuda or cuda:N'
        )
    if other is not None and not _DEVICE.fullmatch(other):
        raise OptionsError(f"offload names the text encoder's device: cpu, cuda or cuda:N, got {other!r:.60}")
