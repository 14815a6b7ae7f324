"""The wan-vace engine's options (kept apart from the engine: reading them imports neither torch nor diffusers).

A profile sets the defaults of the speed settings; a key given in the models file overrides it. Keys whose
default is ``0`` / ``"auto"`` take the profile's value (see :data:`PROFILES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from videosynth.engines.options import Option, OptionsError

WATERMARK_TEXT = "videosynth wan-vace"
# Wan's own negative prompt (Wan2.1 repository, shared/config): the failure modes its authors saw most.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class Profile:
    steps: int
    guidance_scale: float
    fp8: bool
    cache: str  # "none" | "first_block"
    needs_lora: bool


PROFILES = {
    # The model's own defaults (diffusers' WanVACEPipeline: 50 steps, CFG 5).
    "quality": Profile(steps=50, guidance_scale=5.0, fp8=False, cache="none", needs_lora=False),
    # A step+CFG distillation LoRA (lightx2v's run at 4 steps, CFG 1), FP8 weight storage, a block cache.
    "fast": Profile(steps=4, guidance_scale=1.0, fp8=True, cache="first_block", needs_lora=True),
}

OPTIONS = (
    Option(
        "model_dir", str, help="a diffusers-layout directory (model_index.json), as save_pretrained writes it"
    ),
    Option("profile", str, "quality", "speed profile", choices=tuple(PROFILES)),
    Option("steps", int, 0, "denoising steps per segment (0: the profile's: quality 50, fast 4)", minimum=0),
    Option("guidance_scale", float, 0.0, "CFG scale (0: the profile's: quality 5.0, fast 1.0)", minimum=0),
    Option(
        "tier", str, "720P", "the model's native tier (480P for Wan2.1-VACE-1.3B)", choices=("480P", "720P")
    ),
    Option(
        "max_area",
        int,
        0,
        "pixels of the generated frames before the final resize (0: the tier's own area)",
        minimum=0,
    ),
    Option("flow_shift", float, 0.0, "scheduler flow shift (0: 5.0 at 720P, 3.0 at 480P)", minimum=0),
    Option("segment_frames", int, 81, "model frames (16 fps) per chained segment, 4k+1", minimum=17),
    Option("segment_overlap", int, 16, "frames a segment shares with the previous one", minimum=1),
    Option("device", str, "cuda", "torch device: cuda, cuda:N or cpu"),
    Option(
        "dtype",
        str,
        "bfloat16",
        "transformer and text encoder dtype",
        choices=("bfloat16", "float16", "float32"),
    ),
    Option(
        "lora_path", str, "", "a step-distillation LoRA (.safetensors or a directory) for the fast profile"
    ),
    Option("lora_scale", float, 1.0, "strength the LoRA is fused with", minimum=0),
    Option("fp8", str, "auto", "FP8 weight storage (layerwise casting)", choices=("auto", "on", "off")),
    Option("cache", str, "auto", "diffusers block cache", choices=("auto", "none", "first_block")),
    Option("cache_threshold", float, 0.05, "FirstBlockCache threshold", minimum=0),
    Option(
        "boundary_ratio",
        float,
        0.0,
        "Wan2.2 two-expert switch point (0: model_index.json's or 0.875)",
        minimum=0,
        maximum=1,
    ),
    Option("compile", bool, False, "torch.compile the transformer's repeated blocks"),
    Option("vae_tiling", bool, True, "decode the VAE in tiles (the usual out-of-memory point)"),
    Option("cpu_offload", bool, False, "keep idle components in CPU memory (enable_model_cpu_offload)"),
    Option("conditioning_scale", float, 1.0, "strength of the VACE conditioning", minimum=0),
    Option("negative_prompt", str, WAN_NEGATIVE_PROMPT, "negative prompt (used when guidance_scale > 1)"),
    Option("cpu_threads", int, 0, "torch CPU threads (0: torch's default)", minimum=0),
    Option("watermark_text", str, WATERMARK_TEXT, "text of the watermark drawn when a request asks for one"),
)


@dataclass(frozen=True)
class Settings:
    """The options with the profile applied: what the engine runs with."""

    steps: int
    guidance_scale: float
    fp8: bool
    cache: str


def resolve(values: Mapping[str, Any]) -> Settings:
    """The profile's defaults overridden by the keys given; raises OptionsError for a bad combination."""
    profile = PROFILES[values["profile"]]
    if profile.needs_lora and not values["lora_path"]:
        raise OptionsError(
            f"profile {values['profile']!r} needs lora_path (a step-distillation LoRA on local disk)"
        )
    frames = values["segment_frames"]
    if (frames - 1) % 4:
        raise OptionsError(f"segment_frames must be 4k+1 (the VAE packs 4 frames per latent), got {frames}")
    if not 0 < values["segment_overlap"] <= frames - 8:
        raise OptionsError(
            f"segment_overlap must be between 1 and segment_frames - 8, got {values['segment_overlap']}"
        )
    return Settings(
        steps=values["steps"] or profile.steps,
        guidance_scale=values["guidance_scale"] or profile.guidance_scale,
        fp8=profile.fp8 if values["fp8"] == "auto" else values["fp8"] == "on",
        cache=profile.cache if values["cache"] == "auto" else values["cache"],
    )


def check(values: Mapping[str, Any]) -> None:
    """The cross-key checks the registry runs when a models file is read."""
    resolve(values)
