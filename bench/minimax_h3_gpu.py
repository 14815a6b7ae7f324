"""The minimax-h3 engine on a GPU, with full-size random weights built from the released MiniMax-H3 configs.

For one NVIDIA GPU (an H100 80 GB or an H200 141 GB); no downloads: every component of the ``ref2va``
pipeline is built from its config with random weights, directly where the engine would hold it (bf16 on
the GPU; the parameters diffusers keeps in float32 in float32, as ``load_components`` loads them). Random
weights make noise for pictures and sound but cost exactly what trained ones cost: the timings and the
memory are real, the quality is not.

It times one 5 s 720P 16:9 request with 3 reference images through ``MiniMaxH3Engine.frames`` for each
memory placement (the engine's ``offload`` option):

* ``none``: everything resident on the GPU (weights ~130 GiB: an H200 only);
* ``model``: ``ComponentsManager`` auto CPU offload (all the weights start in host RAM: ~130 GiB of it);
* ``text-encoder:cpu``: the Qwen3-VL-32B conditioner in host RAM and run there, the rest on the GPU.

Seconds per denoising step are the median gap between the engine's ``denoising`` progress reports; text
encoding runs from the ``encoding_prompt`` report to the ``encoding_references`` one, decoding from the
first ``decoding`` report to the last; the total is the call plus reading every frame; peak memory is
``torch.cuda.max_memory_allocated`` over the request (after a warm-up). Unlike bench/wan_vace_gpu.py,
each mode runs in a process of its own: a mode is a placement the engine makes once when it is built,
two 62 GiB models cannot be taken back from it, and a mode that runs out of host memory dies alone. A
mode whose weights cannot fit the GPU or the host RAM here is reported as skipped, with the numbers.

It prints one line per mode and a table to paste into docs/benchmarks.md with the GPU's name, and
writes the results as JSON to ``--out`` (default ``$OUT/minimax_h3_gpu.json`` where ``$OUT`` is set).

    python bench/minimax_h3_gpu.py --modes none,text-encoder:cpu --steps 9
    python bench/minimax_h3_gpu.py --tiny     # a smoke run of this script on the CPU (tests' configs)

Each mode hands the engine a ``pipeline_factory`` that returns the random pipeline, built as the engine's
loader builds it (``H3Pipeline``, ``build_blocks()``, the ``ref2va`` workflow, the mode's
``ComponentsManager``); the engine's constructor does everything else (scheduler shifts, placement, offload
hooks) as in production.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/queue.py would shadow the standard library's queue, which torch imports: this folder leaves the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path[:0] = [str(HERE.parent / "src"), str(HERE.parent / "tests")]

import torch

from videosynth import sizes
from videosynth.engines.minimax_h3.options import check
from videosynth.engines.options import OptionsError

MODES = ("none", "model", "text-encoder:cpu")
GIB = 2**30
PROMPT = "[Image 1] opens [Image 2], [Image 3] sway in the wind while she laughs."
REFERENCE_SIZE = (1200, 900)  # width, height: the pipeline scales every image reference to a 2048 short edge

# MiniMaxH3Transformer3DModel (transformer_ref). shared/reference/minimax-h3.md section 1.1 gives heads, head
# dim, hidden, layers, ffn, in/audio channels, patch, text_dim and rope_freq_dim; the other four are diffusers
# 0.42.1's class defaults, which equal the report's figures wherever it gives one. Built, it is 33.1 B
# parameters, 61.7 GiB as loaded (section 4: 61.7 GB bf16).
TRANSFORMER_REF = dict(num_attention_heads=56, attention_head_dim=128, hidden_size=5376, num_layers=50,
                       ffn_dim=14336, in_channels=24, audio_in_channels=32, patch_size=(1, 2, 2), text_dim=5120,
                       rope_freq_dim=16,
                       num_refiner_layers=2, freq_dim=256, time_embed_hidden_dim=5376, time_embed_dim=2688)  # fmt: skip
# AutoencoderKLMiniMaxH3 (vae): section 1.1 (24 latent channels, 16x/4x compression, 17-frame clips, token drop
# 3, a 36-layer 32x64 ViT decoder); block widths and the rest are the class defaults. 2.6 B parameters,
# 5.2 GiB as loaded (section 4: ~5 GB).
VAE = dict(latent_channels=24, block_out_channels=(128, 256, 256, 512, 512, 1024),
           spatial_downsample_factors=(2, 2, 2, 2, 1, 1), temporal_downsample_factors=(1, 2, 2, 1, 1, 1),
           clip_length=17, token_drop=3, decoder_num_layers=36, decoder_num_attention_heads=32,
           decoder_attention_head_dim=64)  # fmt: skip
# AutoencoderKLMiniMaxH3Audio (audio_vae): section 1.1 (DAC encoder rates, BigVGAN decoder rates, 32 latent
# channels, 32 kHz); the rest the class defaults. 0.15 B parameters, float32: 0.56 GiB (section 4: ~0.6 GB).
AUDIO_VAE = dict(encoder_rates=(2, 4, 4, 5, 5), decoder_rates=(5, 5, 2, 2, 2, 2, 2), latent_channels=32,
                 sampling_rate=32000)  # fmt: skip
# The Qwen3-VL-32B conditioner (text_encoder): Qwen/Qwen3-VL-32B-Instruct's config.json (the report names the
# model, hidden 5120 = transformer text_dim, and > 50 layers since the blocks read hidden_states[50];
# transformers' Qwen3VLConfig defaults are the 4B/8B models, so they cannot stand in). 33.4 B parameters,
# 62.1 GiB in bf16 (section 4: 62.1 GB). The token ids come from the tokenizer below.
QWEN3_VL_32B_TEXT = dict(vocab_size=151936, hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                         num_attention_heads=64, num_key_value_heads=8, head_dim=128, hidden_act="silu",
                         max_position_embeddings=262144, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                          "mrope_section": [24, 20, 20], "mrope_interleaved": True})  # fmt: skip
QWEN3_VL_32B_VISION = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, in_channels=3,
                           hidden_act="gelu_pytorch_tanh", patch_size=16, temporal_patch_size=2,
                           spatial_merge_size=2, out_hidden_size=5120, num_position_embeddings=2304,
                           deepstack_visual_indexes=[8, 16, 24])  # fmt: skip
# Qwen3-VL's preprocessor_config.json (16-pixel patches merged 2x2, 64Ki to 16Mi pixels): the number of vision
# tokens each reference costs the conditioner and the transformer. (The H3 repository's own processor/ was not
# read: should it cap the pixels lower, the real model costs less here.)
QWEN3_VL_IMAGE_PROCESSOR = dict(patch_size=16, merge_size=2, temporal_patch_size=2,
                                size={"shortest_edge": 65536, "longest_edge": 16777216},
                                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # fmt: skip
# The pipeline configs of the released modular_model_index.json (section 1.1).
PIPELINE_CONFIGS = dict(canvas_short_edge=768, canvas_max_pixels=768 * 1344, reference_image_short_edge=2048)
# The schedulers' shifts (section 1.1): video, audio.
SHIFTS = (12.0, 3.0)


@dataclass
class Spec:
    """How to build one ``ref2va`` pipeline: the weighted components (built on the meta device, then given
    random weights where the mode holds them), the other components, and the pipeline configs."""

    models: dict[str, Callable[[], torch.nn.Module]]
    others: dict[str, Any]
    configs: dict[str, int]


def full_spec() -> Spec:
    from diffusers import (
        AutoencoderKLMiniMaxH3,
        AutoencoderKLMiniMaxH3Audio,
        MiniMaxH3Scheduler,
        MiniMaxH3Transformer3DModel,
    )
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.utils.import_utils import is_torchvision_available

    from minimax_tiny import VISION_TOKENS, tiny_tokenizer
    from videosynth.engines.minimax_h3.compat import ImageOnlyQwen3VLProcessor

    if is_torchvision_available():  # what AutoProcessor gives on a GPU host
        from transformers import Qwen2VLImageProcessor as ImageProcessor
    else:
        from transformers import Qwen2VLImageProcessorPil as ImageProcessor

    # The tokenizer only turns words into ids: a byte-level one (with Qwen's vision tokens) costs the same as
    # Qwen's BPE but for a few more text rows per prompt, against thousands of vision rows per reference.
    tokenizer = tiny_tokenizer()
    start, end, image_pad, video_pad = tokenizer.convert_tokens_to_ids(VISION_TOKENS)
    qwen = Qwen3VLConfig(
        text_config=QWEN3_VL_32B_TEXT, vision_config=QWEN3_VL_32B_VISION, tie_word_embeddings=False,
        image_token_id=image_pad, video_token_id=video_pad, vision_start_token_id=start, vision_end_token_id=end,
    )  # fmt: skip
    return Spec(
        models={
            "transformer_ref": lambda: MiniMaxH3Transformer3DModel(**TRANSFORMER_REF),
            "text_encoder": lambda: Qwen3VLForConditionalGeneration(qwen),
            "vae": lambda: AutoencoderKLMiniMaxH3(**VAE),
            "audio_vae": lambda: AutoencoderKLMiniMaxH3Audio(**AUDIO_VAE),
        },
        others={
            "tokenizer": tokenizer,
            "processor": ImageOnlyQwen3VLProcessor(
                image_processor=ImageProcessor(**QWEN3_VL_IMAGE_PROCESSOR), tokenizer=tokenizer
            ),
            "scheduler": MiniMaxH3Scheduler(shift=SHIFTS[0]),
            "audio_scheduler": MiniMaxH3Scheduler(shift=SHIFTS[1]),
        },
        configs=dict(PIPELINE_CONFIGS),
    )


def tiny_spec(folder: Path) -> Spec:
    """The configs of the tests' tiny pipeline (tests/minimax_tiny.py), read back from what it saves."""
    from diffusers import (
        AutoencoderKLMiniMaxH3,
        AutoencoderKLMiniMaxH3Audio,
        MiniMaxH3Scheduler,
        MiniMaxH3Transformer3DModel,
    )
    from transformers import Qwen2Tokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from minimax_tiny import build_tiny_pipeline
    from videosynth.engines.minimax_h3.compat import ImageOnlyQwen3VLProcessor
    from videosynth.engines.minimax_h3.engine import INDEX

    path = build_tiny_pipeline(folder / "MiniMax-H3-tiny")
    index = json.loads((path / INDEX).read_text())

    def diffusers_model(cls: Any, subfolder: str) -> Callable[[], torch.nn.Module]:
        config = cls.load_config(path / subfolder, local_files_only=True)
        return lambda: cls.from_config(config)

    qwen = Qwen3VLConfig.from_pretrained(path / "text_encoder", local_files_only=True)
    return Spec(
        models={
            "transformer_ref": diffusers_model(MiniMaxH3Transformer3DModel, "transformer_ref"),
            "text_encoder": lambda: Qwen3VLForConditionalGeneration(qwen),
            "vae": diffusers_model(AutoencoderKLMiniMaxH3, "vae"),
            "audio_vae": diffusers_model(AutoencoderKLMiniMaxH3Audio, "audio_vae"),
        },
        others={
            "tokenizer": Qwen2Tokenizer.from_pretrained(path / "tokenizer", local_files_only=True),
            "processor": ImageOnlyQwen3VLProcessor.from_pretrained(path / "processor", local_files_only=True),
            "scheduler": MiniMaxH3Scheduler.from_pretrained(path / "scheduler", local_files_only=True),
            "audio_scheduler": MiniMaxH3Scheduler.from_pretrained(
                path / "audio_scheduler", local_files_only=True
            ),
        },
        configs={name: int(index[name]) for name in PIPELINE_CONFIGS},
    )


def _fp32_names(module: torch.nn.Module) -> list[str]:
    """The module names the class keeps in float32 whatever dtype it is loaded in (diffusers' and
    transformers' ``_keep_in_fp32_modules``)."""
    names: list[str] = []
    for attribute in ("_keep_in_fp32_modules", "_keep_in_fp32_modules_strict"):
        names += list(getattr(type(module), attribute, None) or [])
    return names


def _param_dtype(name: str, dtype: torch.dtype, keep: list[str]) -> torch.dtype:
    # diffusers' load_model_dict_into_meta: a parameter stays float32 when a name in the list is one of its
    # dotted parts
    return torch.float32 if any(k in name.split(".") for k in keep) else dtype


def meta_model(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``factory()`` with its parameters on the meta device (no memory) and its buffers (rope frequencies,
    filters, computed at construction) real, on the CPU."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False), warnings.catch_warnings():
        # the audio VAE's weight_norm layers use the deprecated torch function
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        return factory()


def model_bytes(module: torch.nn.Module, dtype: torch.dtype) -> int:
    keep = _fp32_names(module)
    return sum(p.numel() * _param_dtype(n, dtype, keep).itemsize for n, p in module.named_parameters())


def materialize(module: torch.nn.Module, device: str, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """Give a meta-built module random weights on ``device``, one parameter at a time, each in the dtype
    the loader gives it: nothing is ever held twice, nor in float32 first. The numbers are drawn on the GPU
    where there is one (fast) and copied to the CPU for a module the mode keeps there."""
    keep = _fp32_names(module)
    draw_on = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(draw_on).manual_seed(seed)
    made: dict[int, torch.nn.Parameter] = {}
    for prefix, sub in module.named_modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) not in made:  # a parameter shared by two modules stays shared
                full_name = f"{prefix}.{name}" if prefix else name
                values = torch.empty(param.shape, dtype=_param_dtype(full_name, dtype, keep), device=draw_on)
                _random_(values, name, generator)
                made[id(param)] = torch.nn.Parameter(values.to(device), requires_grad=False)
            sub._parameters[name] = made[id(param)]
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = buffer.to(device)
    return module.eval()


def _random_(values: torch.Tensor, name: str, generator: torch.Generator) -> None:
    """Weights of about a trained network's scale, so activations do not blow up: a matrix or
    kernel ``N(0, 1 / fan_in)``, a bias zero, any other vector (norm scales, Snake alphas) one."""
    if values.ndim >= 2:
        values.normal_(0.0, 1.0 / math.sqrt(max(1, values[0].numel())), generator=generator)
    elif name.endswith("bias"):
        values.zero_()
    else:
        values.fill_(1.0)


def placement(mode: str, tiny: bool) -> dict[str, str]:
    """Where each weighted component is built: where the engine's placement for ``mode`` would put it, so
    the engine moves nothing (``model``: the offload hooks start every model on the CPU)."""
    names = ("transformer_ref", "text_encoder", "vae", "audio_vae")
    if tiny or mode == "model":
        return dict.fromkeys(names, "cpu")
    if mode == "none":
        return dict.fromkeys(names, "cuda")
    return {name: mode.removeprefix("text-encoder:") if name == "text_encoder" else "cuda" for name in names}


def _host_available() -> int | None:
    """MemAvailable in bytes (Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def fits(mode: str, weights: dict[str, int], where: dict[str, str]) -> str | None:
    """Why the weights of ``mode`` cannot be held here, or None. ``model`` holds every weight in host RAM
    and the largest model on the GPU while it runs."""
    on_host = sum(b for name, b in weights.items() if where[name] == "cpu")
    on_gpu = sum(b for name, b in weights.items() if where[name] != "cpu")
    if mode == "model":
        on_gpu = max(weights.values())
    available = _host_available()
    margin = 4 * GIB  # the interpreter, the CUDA context, frames on the host
    if available is not None and on_host + margin > available:
        return (
            f"the weights need {on_host / GIB:.1f} GiB of host RAM (+{margin / GIB:.0f} GiB margin),"
            f" {available / GIB:.1f} GiB is available"
        )
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        if on_gpu > free:
            return (
                f"the weights need {on_gpu / GIB:.1f} GiB on the GPU,"
                f" {free / GIB:.1f} of {total / GIB:.1f} GiB is free"
            )
    return None


def references(folder: Path, count: int = 3) -> tuple[Any, ...]:
    import numpy as np
    from PIL import Image

    from videosynth.engines.base import ReferenceImage

    rng = np.random.default_rng(0)
    refs = []
    width, height = REFERENCE_SIZE
    for i in range(1, count + 1):
        path = folder / f"ref{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        refs.append(ReferenceImage(i, path, width, height, "PNG"))
    return tuple(refs)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StageClock:
    """The engine's progress reports, timed: ``(stage, done, seconds)`` after the device has caught up."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, int, float]] = []

    def __call__(self, done: int, total: int, stage: str | None = None) -> None:
        _sync()
        self.marks.append((stage or "", done, time.perf_counter()))

    def times(self, stage: str) -> list[float]:
        return [t for s, _, t in self.marks if s == stage]

    def summary(self) -> dict[str, Any]:
        steps, decoding = self.times("denoising"), self.times("decoding")
        prompt, refs = self.times("encoding_prompt"), self.times("encoding_references")
        gaps = [b - a for a, b in itertools.pairwise(steps)]
        return {
            "steps": len(steps),
            "step_s": statistics.median(gaps) if gaps else None,
            "text_encode_s": refs[0] - prompt[0] if prompt and refs else None,
            # the references' VAE encoding, the latents' preparation and the first step (with any move the
            # offload hooks make for it)
            "refs_first_step_s": steps[0] - refs[0] if refs and steps else None,
            "decode_s": decoding[-1] - decoding[0] if len(decoding) >= 2 else None,
        }


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else None


def _allocated_gib() -> float | None:
    return torch.cuda.memory_allocated() / GIB if torch.cuda.is_available() else None


def run_request(engine: Any, refs: tuple[Any, ...], duration: int) -> dict[str, Any]:
    from videosynth.engines.base import GenerationRequest
    from videosynth.errors import EngineOutOfMemory

    width, height = sizes.frame_size("720P", "16:9")
    request = GenerationRequest(prompt=PROMPT, references=refs, resolution="720P", ratio="16:9", width=width,
                                height=height, duration=duration, fps=24, seed=1, watermark=False)  # fmt: skip
    clock = StageClock()
    _reset_peak()
    start = time.perf_counter()
    try:
        frames = engine.frames(request, clock)
        count = sum(1 for _ in frames.frames)
    except EngineOutOfMemory as exc:
        return {"status": "out of memory", "reason": str(exc), "peak_gib": _peak_gib(), **clock.summary()}
    _sync()
    total = time.perf_counter() - start
    assert count == request.num_frames, (count, request.num_frames)
    assert frames.audio is not None and frames.audio.samples.shape[1] == duration * frames.audio.sample_rate
    return {"status": "ok", "total_s": total, "peak_gib": _peak_gib(), **clock.summary()}


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One mode, in this (child) process: build, hand to the engine, warm up, time one request."""
    from videosynth.engines.minimax_h3 import engine as h3
    from videosynth.engines.minimax_h3 import plan

    if args.tiny:
        torch.set_num_threads(1)
    device, dtype = ("cpu", torch.float32) if args.tiny else ("cuda", torch.bfloat16)
    result: dict[str, Any] = {"mode": mode}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = tiny_spec(folder) if args.tiny else full_spec()
        where = placement(mode, args.tiny)
        start = time.perf_counter()
        skeletons = {name: meta_model(factory) for name, factory in spec.models.items()}
        weights = {name: model_bytes(module, dtype) for name, module in skeletons.items()}
        result["weights_gib"] = {name: round(b / GIB, 3) for name, b in weights.items()}
        if torch.cuda.is_available():
            result["device"] = torch.cuda.get_device_name()
            result["gpu_total_gib"] = torch.cuda.get_device_properties(0).total_memory / GIB
            print(f"{mode}: device {result['device']}, {result['gpu_total_gib']:.1f} GiB", flush=True)
        print(
            f"{mode}: random weights, "
            + ", ".join(f"{name} {_size(b)} on {where[name]}" for name, b in weights.items()),
            flush=True,
        )
        reason = fits(mode, weights, where)
        if reason is not None:
            return {**result, "status": "skipped", "reason": reason}

        dtype_ = torch.float32 if args.tiny else torch.bfloat16

        def random_pipeline(manager: Any = None) -> Any:
            # what h3.load_pipeline builds, with the random components instead of load_components
            pipe = h3.H3Pipeline(blocks=h3.build_blocks(), components_manager=manager, workflow=h3.WORKFLOW)
            models = {
                name: materialize(module, where[name], dtype_, seed)
                for seed, (name, module) in enumerate(skeletons.items())
            }
            pipe.update_components(**models, **spec.others, **spec.configs)
            return pipe

        try:
            engine = h3.MiniMaxH3Engine(
                model_dir="(in memory)", steps=args.steps, max_area=args.area, offload=mode, device=device,
                dtype="float32" if args.tiny else "bfloat16", pipeline_factory=random_pipeline,
            )  # fmt: skip
        except torch.OutOfMemoryError as exc:
            return {**result, "status": "out of memory", "reason": f"building: {exc}"[:300]}
        result["build_s"] = time.perf_counter() - start
        result["resident_gib"] = _allocated_gib()
        short_edge, max_pixels = engine.canvas
        width, height = sizes.frame_size("720P", "16:9")
        canvas = plan.canvas_size(width, height, short_edge, max_pixels, args.area)
        result["canvas"] = f"{canvas[0]}x{canvas[1]}"
        result["model_frames"] = plan.model_frames(args.duration * sizes.FPS)
        start = time.perf_counter()
        try:
            engine.warm_up()  # kernels, allocator, and each model once through the offload hooks
        except torch.OutOfMemoryError as exc:
            return {**result, "status": "out of memory", "reason": f"warming up: {exc}"[:300]}
        _sync()
        result["warm_up_s"] = time.perf_counter() - start
        result |= run_request(engine, references(folder), args.duration)
        del engine
        gc.collect()
    return result


def _size(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB // 10 else f"{nbytes / 2**20:.1f} MiB"


def _fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def line(r: dict[str, Any]) -> str:
    """The line printed for a mode's result."""
    if r["status"] != "ok":
        return f"{r['mode']}: {r['status']}: {r.get('reason', '')}"
    peak = "n/a (no CUDA)" if r["peak_gib"] is None else f"{r['peak_gib']:.1f} GiB"
    return (
        f"{r['mode']}: {_fmt(r['step_s'], '.3f')} s/step ({r['steps']} steps), text encode"
        f" {_fmt(r['text_encode_s'])} s, refs + 1st step {_fmt(r['refs_first_step_s'])} s,"
        f" decode {_fmt(r['decode_s'])} s, total {_fmt(r['total_s'], '.1f')} s, peak {peak}"
        f" (canvas {r['canvas']}, {r['model_frames']} frames; build {r['build_s']:.0f} s)"
    )


def run_child(mode: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """``mode`` in a process of its own (this script with ``--child``); its result, or why there is none."""
    out = folder / f"{mode.replace(':', '-')}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--child-result", str(out),
               "--steps", str(args.steps), "--area", str(args.area), "--duration", str(args.duration)]  # fmt: skip
    env = dict(os.environ)
    if args.tiny:
        command.append("--tiny")
        env["CUDA_VISIBLE_DEVICES"] = ""  # the smoke run is a CPU run, even on a GPU host
    try:
        code = subprocess.run(command, env=env, timeout=args.mode_timeout or None, check=False).returncode
    except subprocess.TimeoutExpired:
        return {"mode": mode, "status": "timed out", "reason": f"after --mode-timeout {args.mode_timeout} s"}
    if code == 0 and out.is_file():
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    why = "killed (host out of memory?)" if code in (-9, 137) else f"exit status {code}; its output is above"
    return {"mode": mode, "status": "failed", "reason": why}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"offload modes to time, of {', '.join(MODES)}"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=9,
        help="sigma grid points (N runs the transformer N - 1 times; 9: 8-step turbo)",
    )
    parser.add_argument(
        "--area", type=int, default=0, help="the engine's max_area (0: the model's 768x1344 canvas)"
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds of the 720P 16:9 request")
    parser.add_argument("--mode-timeout", type=int, default=0, help="seconds a mode may take (0: no limit)")
    parser.add_argument(
        "--out", default="", help="JSON results file (default: $OUT/minimax_h3_gpu.json, if $OUT is set)"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a smoke run of this script on the CPU: the tests' tiny configs, float32, a tiny canvas",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = run_mode(args.child, args)
        Path(args.child_result).write_text(json.dumps(result, indent=2))
        return
    if not args.tiny and not torch.cuda.is_available():
        print(
            "no CUDA device here: this benchmark needs an NVIDIA GPU (an H100 or H200);"
            " --tiny runs a smoke run of the script on the CPU",
            file=sys.stderr,
        )
        sys.exit(2)
    modes = [m for m in args.modes.split(",") if m]
    device = "cpu" if args.tiny else "cuda"
    # (the GPU's name comes from the modes: a CUDA context here would take memory from theirs)
    print(f"device: {'CPU' if args.tiny else 'CUDA'}; torch {torch.__version__}")
    print(
        "RANDOM WEIGHTS, built from the released MiniMax-H3 configs"
        + (" (--tiny: the tests' tiny configs)" if args.tiny else "")
        + ": timings and memory are real, the pictures and sound are noise"
    )
    print(
        f"request: {args.duration} s 720P 16:9, 3 references {REFERENCE_SIZE[0]}x{REFERENCE_SIZE[1]},"
        f" {args.steps} steps ({args.steps - 1} transformer evaluations), max_area {args.area}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            try:
                check({"device": device, "offload": mode})
            except OptionsError as exc:  # e.g. "model" on a CPU: the engine refuses it
                result = {"mode": mode, "status": "skipped", "reason": f"the engine refuses it here: {exc}"}
            else:
                result = run_child(mode, args, Path(tmp))
            results.append(result)
            print(line(result), flush=True)

    print(f"\nGPU: {next((r['device'] for r in results if 'device' in r), 'none (CPU)')}")
    print(
        "| mode | s/step | steps | text encode s | refs + 1st step s | decode s"
        f" | end-to-end s ({args.duration} s 720P) | peak GiB |\n|---|---|---|---|---|---|---|---|"
    )
    for r in results:
        if r["status"] == "ok":
            print(
                f"| {r['mode']} | {_fmt(r['step_s'], '.3f')} | {r['steps']} | {_fmt(r['text_encode_s'])}"
                f" | {_fmt(r['refs_first_step_s'])} | {_fmt(r['decode_s'])} | {_fmt(r['total_s'], '.1f')}"
                f" | {_fmt(r['peak_gib'], '.1f')} |"
            )
        else:
            print(f"| {r['mode']} | {r['status']} | | | | | | |")
    print("anchors: SGLang 4xH200 T2VA 1344x768 124 frames 50 steps 75.1 s; hosted HappyHorse ~40 s")

    where = next((r["device"] for r in results if "device" in r), "CPU" if args.tiny else "CUDA")
    out = args.out or (str(Path(os.environ["OUT"]) / "minimax_h3_gpu.json") if os.environ.get("OUT") else "")
    if out:
        report = {"device": where, "torch": torch.__version__, "random_weights": True, "tiny": args.tiny,
                  "steps": args.steps, "area": args.area, "duration": args.duration, "results": results}  # fmt: skip
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
        print(f"results: {out}")
    if any(r["status"] in ("failed", "timed out") for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
