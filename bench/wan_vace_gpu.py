"""The wan-vace engine on a GPU, with full-size random weights built from the real Wan2.1-VACE configs.

For one NVIDIA GPU (an H100 or H200); no downloads: every component is built from its config with random
weights, in bf16 on the GPU (the VAE in float32, as the engine loads it). Random weights make meaningless
pictures but cost exactly what trained ones cost per step.

For each model size it times, in the same process and on the same pipeline object:

* ``plain``: ``WanVACEPipeline(...)(...)`` with default settings (no tiling, no cache), the baseline;
* ``quality``: the engine's quality profile, same step count as ``plain`` (target: <= 1.05x plain);
* ``fast``: the engine's fast profile (a random rank-64 LoRA fused, FP8 weight storage, FirstBlockCache,
  CFG 1; target: >= 1.5x faster per step than quality) and its end-to-end seconds for a 5 s 720P task.

Seconds per denoising step come from the step callbacks (median gap), end-to-end seconds from the call,
peak memory from ``torch.cuda.max_memory_allocated``. It prints one table and the ratios; paste them into
docs/benchmarks.md with the GPU's name.

    python bench/wan_vace_gpu.py --models 1.3b,14b --steps 4
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/queue.py would shadow the standard library's queue, which torch imports: this folder leaves the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path[:0] = [str(HERE.parent / "src"), str(HERE.parent / "tests")]

import numpy as np
import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
from PIL import Image
from transformers import UMT5Config, UMT5EncoderModel

from videosynth.engines.base import GenerationRequest, ReferenceImage
from videosynth.engines.wan_vace import plan
from videosynth.engines.wan_vace.engine import WanVaceEngine
from wan_tiny import tiny_tokenizer

# Wan2.1-VACE transformer configs (the *-diffusers repositories' transformer/config.json).
TRANSFORMERS = {
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
                 vace_layers=list(range(0, 30, 2))),
    "14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
                vace_layers=list(range(0, 40, 5))),
}  # fmt: skip
COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
              cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
              vace_in_channels=96)  # fmt: skip
# umt5-xxl, the Wan text encoder.
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0,
                eos_token_id=1, decoder_start_token_id=0)  # fmt: skip


def build(size: str) -> Any:
    if size == "tiny":
        from wan_tiny import build_pipeline

        return build_pipeline()
    torch.manual_seed(0)
    with torch.device("cuda"):
        transformer = WanVACETransformer3DModel(**COMMON, **TRANSFORMERS[size]).to(torch.bfloat16)
        text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).to(torch.bfloat16)
        vae = AutoencoderKLWan()  # the class defaults are Wan's VAE
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    )
    # The tokenizer only turns words into ids: a word-level one costs the same as Wan's sentencepiece model.
    return WanVACEPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
    )


def save_random_lora(folder: Path, transformer: Any, rank: int = 64) -> Path:
    """A random LoRA on every attention and feed-forward projection, in the layout peft trainings save,
    written without touching ``transformer`` (the baseline must run the unchanged model)."""
    targets = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(targets):
            out_features, in_features = module.weight.shape
            state[f"{name}.lora_A.weight"] = (
                torch.randn(rank, in_features, generator=generator) / in_features**0.5
            )
            state[f"{name}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * 1e-3
    WanVACEPipeline.save_lora_weights(folder, transformer_lora_layers=state)
    return folder / "pytorch_lora_weights.safetensors"


def references(folder: Path, count: int = 3) -> tuple[ReferenceImage, ...]:
    refs = []
    rng = np.random.default_rng(0)
    for i in range(1, count + 1):
        path = folder / f"ref{i}.png"
        Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)).save(path)
        refs.append(ReferenceImage(i, path, 1200, 900, "PNG"))
    return tuple(refs)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepClock:
    def __init__(self) -> None:
        self.marks: list[float] = []

    def __call__(self, *args: Any) -> Any:
        _sync()
        self.marks.append(time.perf_counter())
        return args[-1] if args and isinstance(args[-1], dict) else None

    def per_step(self) -> float:
        gaps = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return statistics.median(gaps) if gaps else float("nan")


def run_plain(pipe: Any, refs: tuple[ReferenceImage, ...], steps: int, max_area: int) -> dict[str, float]:
    """The baseline: the pipeline called as its documentation shows, at the size the engine generates."""
    width, height = plan.generation_size("720P", "16:9", "720P", max_area)
    images = [Image.open(r.path).convert("RGB") for r in refs]
    clock = StepClock()
    _reset_peak()
    start = time.perf_counter()
    pipe(prompt="a woman in a red qipao opens a fan", reference_images=images, height=height, width=width,
         num_frames=plan.model_frames(5), num_inference_steps=steps, guidance_scale=5.0, output_type="np",
         callback_on_step_end=lambda p, i, t, kw: clock(kw))  # fmt: skip
    _sync()
    return {"step_s": clock.per_step(), "e2e_s": time.perf_counter() - start, "peak_gib": _peak()}


def run_engine(engine: WanVaceEngine, refs: tuple[ReferenceImage, ...]) -> dict[str, float]:
    request = GenerationRequest(prompt="[Image 1] opens [Image 2], [Image 3] sway.", references=refs,
                                resolution="720P", ratio="16:9", width=1280, height=720, duration=5, fps=24,
                                seed=1, watermark=False)  # fmt: skip
    clock = StepClock()

    def on_progress(done: int, total: int, stage: str | None = None) -> None:
        if stage == "denoising":
            clock()

    _reset_peak()
    start = time.perf_counter()
    frames = sum(1 for _ in engine.frames(request, on_progress).frames)
    assert frames == 120
    _sync()
    return {"step_s": clock.per_step(), "e2e_s": time.perf_counter() - start, "peak_gib": _peak()}


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="1.3b,14b")
    parser.add_argument("--steps", type=int, default=4, help="steps of the plain and quality runs")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a smoke run of this script on the CPU: the tests' tiny model, small frames",
    )
    args = parser.parse_args()
    if args.tiny:
        args.models = "tiny"
        torch.set_num_threads(1)
    device, dtype, max_area = ("cpu", "float32", 64 * 36) if args.tiny else ("cuda", "bfloat16", 0)
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"device: {where}; torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        refs = references(folder)
        for size in args.models.split(","):
            pipe = build(size)
            lora = save_random_lora(folder / f"lora-{size}", pipe.transformer)
            pipe.set_progress_bar_config(disable=True)
            pipe.to(device)
            run_plain(pipe, refs, 1, max_area)  # warm-up: kernels, allocator
            plain = run_plain(pipe, refs, args.steps, max_area)
            common = dict(
                model_dir="(in memory)", device=device, dtype=dtype, max_area=max_area, pipeline=pipe
            )
            quality = WanVaceEngine(steps=args.steps, **common)
            quality.warm_up()
            q = run_engine(quality, refs)
            # The fast profile changes the weights in place (fused LoRA, FP8 storage): last, on this pipeline.
            fast = WanVaceEngine(profile="fast", lora_path=str(lora), **common)
            fast.warm_up()
            f = run_engine(fast, refs)
            rows.append((size, plain, q, f))
            print(f"{size}: plain {plain}\n      quality {q}\n      fast {f}", flush=True)
            del pipe, quality, fast
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    print("\n| model | run | s/step | end-to-end s (5 s 720P) | peak GiB |\n|---|---|---|---|---|")
    for size, plain, q, f in rows:
        for name, r in (("plain WanVACEPipeline", plain), ("quality", q), ("fast", f)):
            print(f"| {size} | {name} | {r['step_s']:.3f} | {r['e2e_s']:.1f} | {r['peak_gib']:.1f} |")
        print(
            f"| {size} | quality / plain per step | {q['step_s'] / plain['step_s']:.3f} (target <= 1.05) | | |"
        )
        print(f"| {size} | quality / fast per step | {q['step_s'] / f['step_s']:.2f} (target >= 1.5) | | |")
    print("anchors: hosted HappyHorse ~40 s; LightX2V Wan 14B 4-step FP8 on one H200: 44 s")


if __name__ == "__main__":
    main()
