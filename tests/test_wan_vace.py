"""The wan-vace engine on a tiny random Wan VACE pipeline, on the CPU, loaded as real weights are.

The pipeline (and a random LoRA for the fast profile) is built from configs and saved with
save_pretrained (tests/wan_tiny.py); the engine loads it from that directory with local files only.
What the model receives is observed with forward hooks on the real transformer; nothing of ours is
replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpu_engine_refs import coloured_references, one_torch_thread  # noqa: E402
from videosynth.engines.base import GenerationRequest, ReferenceImage  # noqa: E402
from videosynth.engines.registry import create_engine  # noqa: E402
from videosynth.engines.wan_vace.engine import WanVaceEngine  # noqa: E402
from videosynth.errors import Canceled, EngineError, EngineOutOfMemory  # noqa: E402
from wan_tiny import save_lora, save_pipeline  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pipeline(tmp_path_factory.mktemp("wan") / "Wan-tiny-diffusers")


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> list[ReferenceImage]:
    return coloured_references(tmp_path_factory.mktemp("refs"))


def _engine(weights: Path, **options: Any) -> WanVaceEngine:
    given = {"model_dir": str(weights), "device": "cpu", "dtype": "float32", "max_area": 64 * 36, "steps": 2}
    engine = create_engine("wan-vace", given | options)
    assert isinstance(engine, WanVaceEngine)
    return engine


def _request(refs: list[ReferenceImage], **fields: Any) -> GenerationRequest:
    prompt = " ".join(f"[Image {r.index}] walks." for r in refs)
    values: dict[str, Any] = dict(prompt=prompt, references=tuple(refs), resolution="720P", ratio="16:9",
                                  width=1280, height=720, duration=3, fps=24, seed=7, watermark=False)  # fmt: skip
    values.update(fields)
    return GenerationRequest(**values)


class Reports:
    def __init__(self, stop_at: tuple[str, int] | None = None) -> None:
        self.seen: list[tuple[int, int, str | None]] = []
        self.stop_at = stop_at

    def __call__(self, done: int, total: int, stage: str | None = None) -> None:
        self.seen.append((done, total, stage))
        if self.stop_at == (stage, done):
            raise Canceled()


def _video(
    engine: WanVaceEngine, request: GenerationRequest, reports: Reports | None = None
) -> list[np.ndarray]:
    return list(engine.frames(request, reports or Reports()).frames)


class ControlInputs:
    """What the transformer gets as VACE context, per forward call (the real module, observed)."""

    def __init__(self, engine: WanVaceEngine) -> None:
        self.calls: list[Any] = []
        self._handle = engine.pipe.transformer.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append(kwargs["control_hidden_states"].detach().clone())

    def close(self) -> None:
        self._handle.remove()


def test_the_seed_request_has_the_exact_size_and_frame_count(weights: Path, references: list) -> None:
    engine = _engine(weights)
    reports = Reports()
    frames = _video(engine, _request(references[:3], duration=5, watermark=True), reports)
    assert len(frames) == 120
    assert all(f.shape == (720, 1280, 3) and f.dtype == np.uint8 for f in frames)
    stages = [stage for _, _, stage in reports.seen]
    assert stages == ["encoding_prompt", "encoding_prompt", "denoising", "denoising", "decoding", "decoding"]
    done = [d for d, _, _ in reports.seen]
    assert done == sorted(done) and done[-1] == reports.seen[-1][1]


def test_image_1_reaches_the_model_first(weights: Path, references: list) -> None:
    """The latent frame at position k of the VACE context is [Image k+1]'s, as a one-reference call makes it."""
    engine = _engine(weights, steps=1)
    observed = ControlInputs(engine)
    try:
        _video(engine, _request(references[:3]))
        together = observed.calls[0]
        alone = []
        for ref in references[:3]:
            observed.calls.clear()
            single = ReferenceImage(1, ref.path, ref.width, ref.height, ref.format)
            _video(engine, _request([single]))
            alone.append(observed.calls[0][:, :, 0])
    finally:
        observed.close()
    for position, latent in enumerate(alone):
        assert torch.allclose(together[:, :, position], latent, atol=1e-5), (
            f"[Image {position + 1}] misplaced"
        )
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # the references are distinguishable at all


def test_nine_references_make_a_video(weights: Path, references: list) -> None:
    engine = _engine(weights)
    observed = ControlInputs(engine)
    try:
        frames = _video(engine, _request(references, ratio="9:16", width=720, height=1280))
    finally:
        observed.close()
    assert len(frames) == 72 and frames[0].shape == (1280, 720, 3)
    latent_frames = (49 - 1) // 4 + 1
    assert observed.calls[0].shape[2] == 9 + latent_frames  # one latent frame per reference, then the video


def test_the_seed_decides_the_video(weights: Path, references: list) -> None:
    engine = _engine(weights)
    first = _video(engine, _request(references[:2], seed=11))
    again = _video(engine, _request(references[:2], seed=11))
    other = _video(engine, _request(references[:2], seed=12))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_a_12_second_video_runs_as_chained_segments(weights: Path, references: list) -> None:
    engine = _engine(weights, segment_frames=81, segment_overlap=16, max_area=32 * 16)
    observed = ControlInputs(engine)
    reports = Reports()
    try:
        frames = _video(
            engine, _request(references[:2], duration=12, ratio="1:1", width=960, height=960), reports
        )
    finally:
        observed.close()
    assert len(frames) == 12 * 24 and frames[0].shape == (960, 960, 3)
    # Three segments (0-81, 65-146, 130-193 of 193 model frames), 2 steps each, CFG: 2 passes a step.
    assert len(observed.calls) == 3 * 2 * 2
    assert [stage for _, _, stage in reports.seen].count("decoding") == 3 * 2
    # A continued segment gets its first 16 frames (4 latent frames) as known video: mask 0 there, 1 after.
    refs = 2
    mask = observed.calls[4][0, 32:]  # segment 2's first pass; channels: 16 inactive, 16 reactive, 64 mask
    assert float(mask[:, refs : refs + 4].max()) == 0.0
    assert float(mask[:, refs + 4 :].min()) == 1.0
    first_mask = observed.calls[0][0, 32:]
    assert float(first_mask[:, refs:].min()) == 1.0  # the first segment generates everything
    done = [d for d, _, _ in reports.seen]
    assert done == sorted(done)


def test_a_cancel_stops_within_one_step_and_decodes_nothing(weights: Path, references: list) -> None:
    engine = _engine(weights, steps=6)
    observed = ControlInputs(engine)
    decoded: list[int] = []
    decode = engine.pipe.vae.decode
    engine.pipe.vae.decode = lambda *a, **k: decoded.append(1) or decode(*a, **k)
    try:
        with pytest.raises(Canceled):
            _video(engine, _request(references[:2]), Reports(stop_at=("denoising", 3)))  # after 2 of 6 steps
        assert len(observed.calls) == 2 * 2  # the steps done, both CFG passes; not one more
        assert decoded == []
        # The engine is fine afterwards.
        assert len(_video(engine, _request(references[:2]))) == 72
    finally:
        observed.close()
        engine.pipe.vae.decode = decode


def test_out_of_memory_fails_the_task_and_the_engine_goes_on(weights: Path, references: list) -> None:
    engine = _engine(weights, steps=3)
    calls = []

    def exhaust(module: Any, args: Any, kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 3:  # what CUDA's allocator raises when a step's activations do not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = engine.pipe.transformer.register_forward_pre_hook(exhaust, with_kwargs=True)
    try:
        with pytest.raises(EngineOutOfMemory, match="ran out of memory"):
            _video(engine, _request(references[:2]))
        assert len(_video(engine, _request(references[:2]))) == 72
    finally:
        handle.remove()


def test_the_fast_profile_fuses_the_lora_stores_fp8_and_caches(
    weights: Path, references: list, tmp_path: Path
) -> None:
    lora = save_lora(tmp_path / "lora")
    quality = _engine(weights, steps=4)
    fast = _engine(weights, steps=0, profile="fast", lora_path=str(lora))
    assert (fast.settings.steps, fast.settings.guidance_scale) == (4, 1.0)
    linear = fast.pipe.transformer.blocks[0].attn1.to_q
    assert linear.weight.dtype == torch.float8_e4m3fn  # stored in FP8, computed in the compute dtype
    assert type(linear).__name__ == "Linear"  # fused: no LoRA layer left to run per step
    assert fast.pipe.transformer.is_cache_enabled and not quality.pipe.transformer.is_cache_enabled
    observed = ControlInputs(fast)
    reports = Reports()
    try:
        frames = _video(fast, _request(references[:2]), reports)
    finally:
        observed.close()
    assert len(frames) == 72
    assert [s for _, _, s in reports.seen].count("denoising") == 4
    assert len(observed.calls) == 4  # CFG 1: one pass a step
    assert not np.array_equal(frames[10], _video(quality, _request(references[:2]))[10])


def test_a_second_expert_runs_as_wan_2_2(tmp_path: Path, references: list) -> None:
    weights = save_pipeline(tmp_path / "Wan2.2-tiny", two_experts=True)
    engine = _engine(weights, steps=4)
    assert engine.pipe.transformer_2 is not None and engine.pipe.config.boundary_ratio == 0.9
    high, low = ControlInputs(engine), []
    handle = engine.pipe.transformer_2.register_forward_pre_hook(
        lambda *a, **k: low.append(1), with_kwargs=True
    )
    try:
        assert len(_video(engine, _request(references[:1]))) == 72
    finally:
        high.close()
        handle.remove()
    assert high.calls and low  # both experts took steps


def test_loading_refuses_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"model_index\.json"):
        _engine(tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA device"):
            create_engine("wan-vace", {"model_dir": str(tmp_path)})
