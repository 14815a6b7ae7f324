"""The minimax-h3 engine on a tiny random MiniMax-H3 pipeline, on the CPU, loaded as real weights are.

The pipeline is built from configs and saved with save_pretrained (tests/minimax_tiny.py); the engine
loads it from that directory with local files only, through ``load_components``. What the model receives
is observed with forward hooks on the real modules; nothing of ours is replaced. Its saved canvas is tiny
(a short edge of 32 pixels), so a 15-second video is cheap here; the engine scales to the request's size.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpu_engine_refs import coloured_references, one_torch_thread  # noqa: E402
from minimax_tiny import build_tiny_pipeline, save_lora  # noqa: E402
from videosynth import sizes  # noqa: E402
from videosynth.engines.base import FrameEngine, Frames, GenerationRequest, ReferenceImage  # noqa: E402
from videosynth.engines.minimax_h3 import plan  # noqa: E402
from videosynth.engines.minimax_h3.engine import MiniMaxH3Engine  # noqa: E402
from videosynth.engines.registry import create_engine  # noqa: E402
from videosynth.errors import Canceled, EngineError, EngineOutOfMemory  # noqa: E402

STEPS = 4  # sigma grid points: 3 transformer evaluations
SAMPLE_RATE = 32000


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("h3") / "MiniMax-H3-tiny")


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> list[ReferenceImage]:
    return coloured_references(tmp_path_factory.mktemp("refs"))


def _engine(weights: Path, **options: Any) -> MiniMaxH3Engine:
    given = {"model_dir": str(weights), "device": "cpu", "dtype": "float32", "steps": STEPS}
    engine = create_engine("minimax-h3", given | options)
    assert isinstance(engine, MiniMaxH3Engine) and isinstance(engine, FrameEngine)
    return engine


@pytest.fixture(scope="module")
def engine(weights: Path) -> MiniMaxH3Engine:
    return _engine(weights)


def _request(refs: list[ReferenceImage], **fields: Any) -> GenerationRequest:
    prompt = " ".join(f"[Image {r.index}] waves." for r in refs)
    width, height = sizes.frame_size("480P", "1:1")
    values: dict[str, Any] = dict(prompt=prompt, references=tuple(refs), resolution="480P", ratio="1:1",
                                  width=width, height=height, duration=3, fps=24, seed=7, watermark=False)  # fmt: skip
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


class Observed:
    """Calls of a real module (its forward's keyword arguments), through a forward pre-hook."""

    def __init__(self, module: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self._handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        self.calls.append(dict(kwargs))

    def __enter__(self) -> Observed:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def _prompts(engine: MiniMaxH3Engine, observed: Observed) -> list[str]:
    """What the Qwen3-VL conditioner read, as text."""
    return [engine.pipe.tokenizer.decode(call["input_ids"][0]) for call in observed.calls]


def test_a_3_second_request_is_72_frames_at_the_exact_size_with_its_soundtrack(
    engine: MiniMaxH3Engine, references: list[ReferenceImage]
) -> None:
    reports = Reports()
    with Observed(engine.pipe.transformer_ref) as steps:
        made = engine.frames(_request(references[:2], watermark=True), reports)
    frames = list(made.frames)
    width, height = sizes.frame_size("480P", "1:1")
    assert len(frames) == 72
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in frames)
    assert made.stage == "encoding" and made.audio is not None
    assert made.audio.sample_rate == SAMPLE_RATE
    samples = made.audio.samples
    assert samples.shape == (2, 3 * SAMPLE_RATE) and samples.dtype == np.float32
    assert np.abs(samples).max() <= 1.0 and np.abs(samples).max() > 0
    # 73 frames (17n + 5) were generated: 40 audio latents a second, for both channels.
    assert len(steps.calls) == STEPS - 1
    assert steps.calls[0]["audio_hidden_states"].shape[1] == 2 * round(73 / 24 * 40)
    stages = [stage for _, _, stage in reports.seen]
    assert stages == ["encoding_prompt", "encoding_references"] + ["denoising"] * 3 + ["decoding"] * 2
    denoising = [(done, total) for done, total, stage in reports.seen if stage == "denoising"]
    assert denoising == [(1, 3), (2, 3), (3, 3)]


def test_15_seconds_is_360_frames_and_15_seconds_of_sound(
    engine: MiniMaxH3Engine, references: list[ReferenceImage]
) -> None:
    # Any exact size works (the frames are resized and cropped to it): a small one keeps 360 frames cheap.
    made = engine.frames(_request(references[:2], duration=15, width=96, height=54), Reports())
    count = 0
    for frame in made.frames:
        assert frame.shape == (54, 96, 3) and frame.dtype == np.uint8
        count += 1
    assert count == 360
    assert made.audio is not None and made.audio.samples.shape == (2, 15 * SAMPLE_RATE)


def test_every_duration_reaches_the_pipeline_as_its_17n_plus_5_frames(
    engine: MiniMaxH3Engine, references: list[ReferenceImage]
) -> None:
    """The pipeline accepts 3 s (73 frames) and 4 s (107), below diffusers' own 5 s, as the shortest
    and longest the engine asks for (its bounds are widened to them)."""
    for duration in (4, 14):
        made = engine.frames(_request(references[:1], duration=duration, width=32, height=32), Reports())
        assert sum(1 for _ in made.frames) == duration * 24
        assert made.audio is not None and made.audio.samples.shape == (2, duration * SAMPLE_RATE)


def test_the_prompt_reaches_the_model_with_its_picture_labels(
    engine: MiniMaxH3Engine, references: list[ReferenceImage]
) -> None:
    request = _request(references[:2], prompt="[Image 1] hands [image 2] a cup; [Image 3] stays out.")
    with Observed(engine.pipe.text_encoder.model) as conditioner:
        _ = list(engine.frames(request, Reports()).frames)
    (presented,) = _prompts(engine, conditioner)
    # The pipeline's presentation: a label and a vision block per image, in order, then our prompt.
    assert presented.startswith("<Picture 1>: <|vision_start|>")
    assert presented.count("<|vision_start|>") == 2 and "<Picture 2>: <|vision_start|>" in presented
    assert presented.endswith("<Picture 1> hands <Picture 2> a cup; [Image 3] stays out.")


def test_nine_references_make_a_video(engine: MiniMaxH3Engine, references: list[ReferenceImage]) -> None:
    request = _request(references, ratio="9:16", width=48, height=80)
    with Observed(engine.pipe.text_encoder.model) as conditioner:
        made = engine.frames(request, Reports())
        frames = list(made.frames)
    assert len(frames) == 72 and frames[0].shape == (80, 48, 3)
    (presented,) = _prompts(engine, conditioner)
    assert [f"<Picture {k}>: " in presented for k in range(1, 10)] == [True] * 9
    assert presented.endswith(" ".join(f"<Picture {k}> waves." for k in range(1, 10)))


def test_the_seed_decides_the_video_and_its_sound(
    engine: MiniMaxH3Engine, references: list[ReferenceImage]
) -> None:
    def make(seed: int, watermark: bool = False) -> Frames:
        request = _request(references[:1], seed=seed, width=128, height=72, watermark=watermark)
        return engine.frames(request, Reports())

    first, again, other, marked = make(11), make(11), make(12), make(11, watermark=True)
    first_frames, marked_frames = list(first.frames), list(marked.frames)
    assert all(np.array_equal(a, b) for a, b in zip(first_frames, again.frames, strict=True))
    # The watermark: drawn at the bottom, the rest as it was.
    for plain, drawn in zip(first_frames, marked_frames, strict=True):
        assert np.array_equal(plain[:36], drawn[:36]) and not np.array_equal(plain[36:], drawn[36:])
    assert first.audio is not None and again.audio is not None and other.audio is not None
    assert np.array_equal(first.audio.samples, again.audio.samples)
    assert not np.array_equal(first.audio.samples, other.audio.samples)


def test_a_cancel_after_the_first_step_stops_the_pipeline(
    engine: MiniMaxH3Engine, references: list[ReferenceImage], caplog: pytest.LogCaptureFixture
) -> None:
    from diffusers.utils import logging as diffusers_logging

    decoded: list[int] = []
    vae = engine.pipe.vae
    decode = vae.decode
    vae.decode = lambda *a, **k: decoded.append(1) or decode(*a, **k)
    diffusers_logging.enable_propagation()  # its log to caplog
    try:
        with Observed(engine.pipe.transformer_ref) as steps, pytest.raises(Canceled):
            engine.frames(_request(references[:2]), Reports(stop_at=("denoising", 1)))
    finally:
        diffusers_logging.disable_propagation()
        del vae.decode
    assert len(steps.calls) == 1  # the step done; not one more
    assert decoded == []
    assert "Error in block" not in caplog.text  # a stop is no pipeline failure to log
    # A stop before denoising starts, too; and the engine is fine afterwards.
    with pytest.raises(Canceled):
        engine.frames(_request(references[:2]), Reports(stop_at=("encoding_references", 0)))
    assert len(list(engine.frames(_request(references[:2]), Reports()).frames)) == 72


def test_out_of_memory_fails_the_task_and_the_engine_goes_on(
    engine: MiniMaxH3Engine, references: list[ReferenceImage]
) -> None:
    calls = []

    def exhaust(module: Any, args: Any, kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:  # what CUDA's allocator raises when a step's activations do not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = engine.pipe.transformer_ref.register_forward_pre_hook(exhaust, with_kwargs=True)
    try:
        with pytest.raises(EngineOutOfMemory, match="ran out of memory"):
            engine.frames(_request(references[:2]), Reports())
        assert len(list(engine.frames(_request(references[:2]), Reports()).frames)) == 72
    finally:
        handle.remove()


def test_the_canvas_is_the_pipelines_own_where_it_fits() -> None:
    from diffusers.modular_pipelines.minimax_h3.modular_pipeline import resolve_canvas_size

    for width, height in sizes.FRAME_SIZES.values():
        theirs_h, theirs_w = resolve_canvas_size(width, height, 32, 768, 768 * 1344)
        ours = plan.canvas_size(width, height)
        if theirs_w * theirs_h <= plan.CANVAS_MAX_PIXELS:  # theirs may round past the area budget
            assert ours == (theirs_w, theirs_h), (width, height)


def test_a_turbo_lora_is_fused_into_transformer_ref(
    weights: Path, engine: MiniMaxH3Engine, references: list[ReferenceImage], tmp_path: Path
) -> None:
    lora = save_lora(tmp_path / "lora")
    # A turbo LoRA's settings: few steps, a lower video shift (users run 6 / 3 with them).
    turbo = _engine(weights, lora_path=str(lora), lora_scale=1.0, steps=3, flow_shift=6.0)
    assert (turbo.pipe.scheduler.shift, turbo.pipe.audio_scheduler.shift) == (6.0, 3.0)
    linear = turbo.pipe.transformer_ref.transformer_blocks[0].attn.to_q
    assert type(linear).__name__ == "Linear"  # fused: no LoRA layer left to run per step
    plain = engine.pipe.transformer_ref.transformer_blocks[0].attn.to_q
    assert not torch.equal(linear.weight, plain.weight)
    reports = Reports()
    assert len(list(turbo.frames(_request(references[:1], width=32, height=32), reports).frames)) == 72
    assert [d for d, _, s in reports.seen if s == "denoising"] == [1, 2]
    with pytest.raises(EngineError, match="does not exist"):
        _engine(weights, lora_path=str(tmp_path / "none.safetensors"))


def test_a_text_encoder_of_its_own_makes_the_same_video(
    weights: Path, engine: MiniMaxH3Engine, references: list[ReferenceImage]
) -> None:
    """The placement code path (CPU only here: the conditioner's own device is the CPU too)."""
    request = _request(references[:1], width=32, height=32)
    expected = list(engine.frames(request, Reports()).frames)
    placed = _engine(weights, offload="text-encoder:cpu")
    assert placed.pipe._execution_device == torch.device("cpu")
    frames = list(placed.frames(request, Reports()).frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected, strict=True))
    with pytest.raises(EngineError, match="CUDA device"):  # ComponentsManager's offload needs one
        _engine(weights, offload="model")


def test_warm_up_runs_the_generation_path(engine: MiniMaxH3Engine) -> None:
    engine.warm_up()


def test_loading_refuses_what_cannot_run(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"modular_model_index\.json"):
        _engine(tmp_path)
    # (Its own, not a copy: the index names the directory it was saved to, which a copy would load from.)
    broken = build_tiny_pipeline(tmp_path / "broken")
    shutil.rmtree(broken / "audio_vae")
    shutil.rmtree(broken / "vae")
    with pytest.raises(EngineError, match=r"cannot load (audio_vae, vae|vae, audio_vae) \("):
        _engine(broken)
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA device"):
            create_engine("minimax-h3", {"model_dir": str(weights)})
