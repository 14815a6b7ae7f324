"""The wan-vace engine: diffusers ``WanVACEPipeline`` loaded once from a local directory, many videos.

One engine process per GPU (``videosynth worker``, one per ``CUDA_VISIBLE_DEVICES``): the pipeline is not
thread-safe and holds the device's memory, so it serves one request at a time, which is how the engine
process calls it. The request mapping (sizes, frame rate, segments, references, prompt) is in
:mod:`videosynth.engines.wan_vace.plan`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, WanVACEPipeline
from PIL import Image

from videosynth.engines.base import Frames, GenerationRequest, ProgressCallback, ReferenceImage
from videosynth.engines.wan_vace import plan
from videosynth.engines.wan_vace.options import WATERMARK_TEXT, Settings, resolve
from videosynth.errors import EngineError, EngineOutOfMemory
from videosynth.media.images import load_reference
from videosynth.media.validate import decode_failure
from videosynth.media.watermark import Watermark

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Flow shift per generation tier (the WanVACEPipeline docstring: 5.0 for 720P, 3.0 for 480P).
FLOW_SHIFT = {"480P": 3.0, "720P": 5.0}
# Wan2.2-VACE-Fun's switch from the high-noise to the low-noise expert, where model_index.json lacks it.
DEFAULT_BOUNDARY_RATIO = 0.875
# Mid-grey is "unknown" to VACE (0 in [-1, 1]); frames to generate in a continued segment.
_UNKNOWN = 128
_GENERATE, _KEEP = 255, 0
# WanVACEPipeline's own default for a prompt (its encode_prompt defaults to fewer).
MAX_SEQUENCE_LENGTH = 512


class WanVaceEngine:
    """:class:`videosynth.engines.base.FrameEngine` running Wan VACE reference-to-video."""

    name = "wan-vace"

    def __init__(
        self,
        *,
        model_dir: str,
        profile: str = "quality",
        steps: int = 0,
        guidance_scale: float = 0.0,
        tier: str = "720P",
        max_area: int = 0,
        flow_shift: float = 0.0,
        segment_frames: int = 81,
        segment_overlap: int = 16,
        device: str = "cuda",
        dtype: str = "bfloat16",
        lora_path: str = "",
        lora_scale: float = 1.0,
        fp8: str = "auto",
        cache: str = "auto",
        cache_threshold: float = 0.05,
        boundary_ratio: float = 0.0,
        compile: bool = False,
        vae_tiling: bool = True,
        cpu_offload: bool = False,
        conditioning_scale: float = 1.0,
        negative_prompt: str = "",
        cpu_threads: int = 0,
        watermark_text: str = WATERMARK_TEXT,
        pipeline: Any = None,
    ) -> None:
        """``pipeline``: an already built ``WanVACEPipeline`` to use instead of loading ``model_dir`` (the
        GPU bench builds full-size random weights in memory; a models file cannot pass it)."""
        values = dict(locals())
        del values["self"], values["pipeline"]
        self.settings: Settings = resolve(values)
        self.tier, self.max_area = tier, max_area
        self.segment_frames, self.segment_overlap = segment_frames, segment_overlap
        self.conditioning_scale = conditioning_scale
        self.negative_prompt = negative_prompt
        self.watermark_text = watermark_text
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError('no CUDA device here; wan-vace needs one (device = "cpu" runs it, slowly)')
        self.pipe = (
            pipeline
            if pipeline is not None
            else load_pipeline(Path(model_dir), DTYPES[dtype], boundary_ratio)
        )
        if self.settings.steps < 1:
            raise EngineError("steps must be at least 1")
        if lora_path:
            fuse_lora(self.pipe, Path(lora_path), lora_scale)
        self._schedulers = {
            tier_: _scheduler(self.pipe, flow_shift or shift) for tier_, shift in FLOW_SHIFT.items()
        }
        if vae_tiling:
            self.pipe.vae.enable_tiling()
        for transformer in self._transformers():
            if self.settings.fp8:
                transformer.enable_layerwise_casting(
                    storage_dtype=torch.float8_e4m3fn,
                    compute_dtype=DTYPES[dtype] if self.device.type == "cuda" else torch.float32,
                )
            if self.settings.cache == "first_block":
                from diffusers import FirstBlockCacheConfig

                transformer.enable_cache(FirstBlockCacheConfig(threshold=cache_threshold))
            if compile:
                transformer.compile_repeated_blocks(fullgraph=True)
        if cpu_offload:
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def _transformers(self) -> list[Any]:
        return [
            t for t in (self.pipe.transformer, getattr(self.pipe, "transformer_2", None)) if t is not None
        ]

    def warm_up(self) -> None:
        """One step of a tiny video: the CUDA kernels, the text encoder and the VAE run once before a task."""
        reference = Image.new("RGB", (32, 32), (128, 128, 128))
        self.pipe.scheduler = self._schedulers["480P"]
        self._reset_caches()
        self.pipe(
            prompt="warm up",
            negative_prompt="",
            reference_images=[reference],
            height=32,
            width=32,
            num_frames=5,
            num_inference_steps=1,
            guidance_scale=self.settings.guidance_scale,
            output_type="np",
        )

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        """Generate ``request``'s video on the model, then hand its frames to the encoder at the request's
        size and rate. Progress: ``encoding_prompt``, then ``denoising`` per step and ``decoding`` per
        segment, on one scale; a stop raised by ``on_progress`` ends the work within one step.

        Running out of accelerator memory is :class:`EngineOutOfMemory`, after the memory is freed, so the
        next task runs in the same process."""
        out_of_memory = False
        try:
            video = self._generate(request, on_progress)
        except torch.OutOfMemoryError:
            out_of_memory = True
        except RuntimeError as exc:
            if "can't allocate memory" not in str(exc):  # the CPU allocator's way of saying the same
                raise
            out_of_memory = True
        if out_of_memory:  # outside the handler: the traceback's frames, holding the tensors, are gone
            self._free_memory()
            raise EngineOutOfMemory(
                f"The GPU ran out of memory for {request.resolution} {request.ratio}, {request.duration} s,"
                f" {len(request.references)} reference images; try a lower resolution, a shorter duration"
                " or fewer reference images."
            )
        watermark = (
            Watermark(request.width, request.height, self.watermark_text) if request.watermark else None
        )
        return Frames(
            plan.output_frames(
                video, request.width, request.height, request.num_frames, request.fps, watermark
            )
        )

    def _generate(self, request: GenerationRequest, on_progress: ProgressCallback) -> np.ndarray:
        references = sorted(request.references, key=lambda ref: ref.index)
        if [ref.index for ref in references] != list(range(1, len(references) + 1)):
            raise EngineError(
                f"reference indices must be 1..{len(references)}, got {[r.index for r in references]}"
            )
        tier = plan.generation_tier(request.resolution, self.tier)
        width, height = plan.generation_size(request.resolution, request.ratio, self.tier, self.max_area)
        total = plan.model_frames(request.duration)
        segments = plan.plan_segments(
            total,
            self.segment_frames,
            self.segment_overlap,
            plan.min_frames_for_references(len(references)),
        )
        images = [_reference_image(ref, width, height) for ref in references]
        steps, guidance = self.settings.steps, self.settings.guidance_scale
        units = 1 + len(segments) * (steps + 1)
        on_progress(0, units, "encoding_prompt")
        prompt_embeds, negative_embeds = self.pipe.encode_prompt(
            prompt=plan.rewrite_prompt(request.prompt, len(references)),
            negative_prompt=self.negative_prompt,
            do_classifier_free_guidance=guidance > 1.0,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            device=self.pipe._execution_device,
        )
        on_progress(1, units, "encoding_prompt")
        self.pipe.scheduler = self._schedulers[tier]
        generator = torch.Generator("cpu").manual_seed(request.seed)
        video = np.zeros((total, height, width, 3), np.uint8)
        ordered = [images[i] for i in plan.reference_order(range(len(images)))]
        log.info(
            "wan-vace: %dx%d, %d frames at %d fps in %d segment(s), %d steps, CFG %.1f, %d references",
            width, height, total, plan.MODEL_FPS, len(segments), steps, guidance, len(images),
        )  # fmt: skip
        for number, segment in enumerate(segments):
            done = 1 + number * (steps + 1)
            conditions = _continuation(video, segment, width, height) if segment.keep else {}
            self._reset_caches()
            frames = self.pipe(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_embeds,
                reference_images=ordered,
                conditioning_scale=self.conditioning_scale,
                height=height,
                width=width,
                num_frames=segment.length,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator,
                output_type="np",
                callback_on_step_end=_step_reporter(on_progress, done, units, steps),
                callback_on_step_end_tensor_inputs=[],
                **conditions,
            ).frames[0]
            plan.stitch(video, segment, plan.to_uint8(frames))
            on_progress(done + steps + 1, units, "decoding")
        return video

    def _reset_caches(self) -> None:
        # A canceled call leaves a block cache holding the last step's residuals (the pipeline resets it
        # only when a call ends normally); a new video of another size must not compare against them.
        for transformer in self._transformers():
            if hasattr(transformer, "_reset_stateful_cache"):
                transformer._reset_stateful_cache()

    def _free_memory(self) -> None:
        self._reset_caches()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            log.warning(
                "wan-vace: out of GPU memory; %.1f GiB still allocated after freeing",
                torch.cuda.memory_allocated(self.device) / 2**30,
            )


def load_pipeline(model_dir: Path, dtype: torch.dtype, boundary_ratio: float = 0.0) -> Any:
    """The pipeline of a diffusers-layout directory, from local files only; the VAE in float32 (Wan's
    VAE loses detail in half precision). A directory with ``transformer_2`` is Wan2.2-VACE-Fun: two experts
    switching at ``boundary_ratio``."""
    if not (model_dir / "model_index.json").is_file():
        raise EngineError(
            f"model_dir {model_dir} has no model_index.json: it must be a diffusers layout"
            " (as save_pretrained writes it, or a *-diffusers repository downloaded beforehand)"
        )
    try:
        vae = AutoencoderKLWan.from_pretrained(
            model_dir, subfolder="vae", dtype=torch.float32, local_files_only=True
        )
        pipe = WanVACEPipeline.from_pretrained(model_dir, vae=vae, dtype=dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot load the pipeline in {model_dir}: {exc}") from exc
    if getattr(pipe, "transformer_2", None) is not None:
        ratio = boundary_ratio or pipe.config.boundary_ratio or DEFAULT_BOUNDARY_RATIO
        pipe.register_to_config(boundary_ratio=ratio)
    return pipe


def fuse_lora(pipe: Any, path: Path, scale: float) -> None:
    """Fuse a LoRA (a step-distillation one for the fast profile) into the weights: no per-step cost."""
    if not path.exists():
        raise EngineError(f"lora_path {path} does not exist")
    source = path.parent if path.is_file() else path
    weight_name = path.name if path.is_file() else None
    try:
        pipe.load_lora_weights(
            str(source), weight_name=weight_name, adapter_name="profile", local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise EngineError(f"cannot load the LoRA {path}: {exc}") from exc
    pipe.fuse_lora(lora_scale=scale, components=["transformer"])
    pipe.unload_lora_weights()


def _scheduler(pipe: Any, shift: float) -> Any:
    config = dict(pipe.scheduler.config)
    key = "flow_shift" if "flow_shift" in config else "shift"
    return type(pipe.scheduler).from_config(config, **{key: shift})


def _reference_image(ref: ReferenceImage, width: int, height: int) -> Image.Image:
    try:
        pixels = load_reference(ref.path, width, height)
    except MemoryError:
        raise
    except Exception as exc:  # the worker checked the header only; bad pixel data shows up here
        raise decode_failure(ref.format, ref.width, ref.height, exc, index=ref.index) from exc
    return Image.fromarray(pixels)


def _continuation(video: np.ndarray, segment: plan.Segment, width: int, height: int) -> dict[str, Any]:
    """VACE's ``video`` and ``mask`` for a segment that continues the previous one: its first ``keep``
    frames known (the previous segment's last ones), the rest to generate."""
    grey = Image.new("RGB", (width, height), (_UNKNOWN,) * 3)
    known = [Image.fromarray(frame) for frame in video[segment.start : segment.start + segment.keep]]
    keep, generate = Image.new("L", (width, height), _KEEP), Image.new("L", (width, height), _GENERATE)
    return {
        "video": known + [grey] * (segment.length - segment.keep),
        "mask": [keep] * segment.keep + [generate] * (segment.length - segment.keep),
    }


def _step_reporter(
    on_progress: ProgressCallback, done: int, units: int, steps: int
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        # A stop raised here leaves the denoising loop at once, before the VAE decodes anything.
        on_progress(done + step + 1, units, "denoising")
        if step + 1 == steps:
            on_progress(done + step + 1, units, "decoding")
        return tensors

    return on_step_end
