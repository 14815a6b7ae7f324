"""The minimax-h3 request mapping (frame grid, canvas, labels, trimming) and its options.

Pure functions: no torch here (the engine's own tests are in test_minimax_h3.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from videosynth import sizes
from videosynth.catalog import Catalog, ModelsFileError
from videosynth.engines.minimax_h3 import plan
from videosynth.engines.options import OptionsError
from videosynth.engines.registry import check_options, engine_options
from videosynth.media.watermark import Watermark

GRID = [17 * n + 5 for n in range(30)]


def test_the_frame_grid_is_17n_plus_5() -> None:
    assert GRID[:8] == [5, 22, 39, 56, 73, 90, 107, 124]
    for count in range(1, 400):
        frames = plan.model_frames(count)
        assert frames in GRID and frames >= count
        assert frames - 17 < count  # the smallest such count


@pytest.mark.parametrize("duration", range(sizes.MIN_DURATION, sizes.MAX_DURATION + 1))
def test_every_duration_has_a_frame_count_the_pipeline_takes(duration: int) -> None:
    wanted = duration * sizes.FPS
    frames = plan.model_frames(wanted)
    assert frames >= wanted and (frames - 5) % 17 == 0 and frames - wanted < 17
    shortest, longest = plan.duration_bounds()
    # The pipeline's check: the aligned duration within [min_duration, max_duration].
    assert shortest <= frames / plan.MODEL_FPS <= longest
    # Its soundtrack (40 latents a second, 800 samples each) covers the request's seconds.
    audio = round(frames / plan.MODEL_FPS * 40) * 800
    assert audio >= plan.audio_samples(duration, 32000)


def test_3_and_15_seconds_are_73_and_362_frames() -> None:
    assert plan.model_frames(72) == 73
    assert plan.model_frames(360) == 362
    assert plan.duration_bounds() == (73 / 24, 362 / 24)


@pytest.mark.parametrize("ratio", sizes.RATIOS)
@pytest.mark.parametrize("resolution", sizes.RESOLUTIONS)
def test_every_table_size_gets_a_canvas_of_the_model(resolution: str, ratio: str) -> None:
    width, height = sizes.frame_size(resolution, ratio)
    for max_area in (0, 480 * 864, 416 * 240, 64 * 32):
        cw, ch = plan.canvas_size(width, height, max_area=max_area)
        assert cw % 32 == 0 and ch % 32 == 0
        assert min(cw, ch) <= plan.CANVAS_SHORT_EDGE
        assert cw * ch <= (min(plan.CANVAS_MAX_PIXELS, max_area) if max_area else plan.CANVAS_MAX_PIXELS)
        assert plan.MIN_ASPECT <= cw / ch <= plan.MAX_ASPECT
        if max_area != 64 * 32:  # at 2 blocks of 32x32 only 1:1, 2:1 and 1:2 exist
            assert abs(math.log(cw / ch) - math.log(width / height)) < 0.12, (cw, ch)
    # Nearly the whole budget at the model's own canvas (no needless shrinking).
    cw, ch = plan.canvas_size(width, height)
    assert cw * ch > 0.85 * min(plan.CANVAS_MAX_PIXELS, 768 * 768 * max(width / height, height / width))


def test_the_model_canvas_at_its_own_ratios() -> None:
    # diffusers' resolve_canvas_size: 16:9 -> 768x1344, 1:1 -> 768x768, 4:3 -> 768x1024, 21:9 -> 672x1536.
    assert plan.canvas_size(1280, 720) == (1344, 768)
    assert plan.canvas_size(720, 1280) == (768, 1344)
    assert plan.canvas_size(960, 960) == (768, 768)
    assert plan.canvas_size(1024, 768) == (1024, 768)
    assert plan.canvas_size(2192, 944) == (1536, 672)
    # The canvas configs of a small checkpoint, and max_area.
    assert plan.canvas_size(624, 624, short_edge=32, max_pixels=32 * 64) == (32, 32)
    assert plan.canvas_size(832, 480, short_edge=32, max_pixels=32 * 64) == (64, 32)
    assert plan.canvas_size(1280, 720, max_area=480 * 864) == (864, 480)
    assert plan.canvas_size(1280, 720, max_area=1) == (32, 32)
    # Beyond 4:1 the canvas stays at 4:1 (the frames are cropped to the request).
    assert plan.canvas_size(1000, 100) == (2016, 512)


def test_image_markers_become_the_models_picture_labels() -> None:
    assert plan.rewrite_prompt("[Image 1] waves at [Image 2]; [Image 1] laughs.", 2) == (
        "<Picture 1> waves at <Picture 2>; <Picture 1> laughs."
    )
    # Other forms of the marker, out-of-range numbers and all other text as written.
    assert plan.rewrite_prompt("[image 3] and 【图2】 by [Image 4], not [Image 0] or Image 1.", 3) == (
        "<Picture 3> and <Picture 2> by [Image 4], not [Image 0] or Image 1."
    )
    assert (
        plan.rewrite_prompt("no markers: <Picture 1> [x] (Image 1)", 1)
        == "no markers: <Picture 1> [x] (Image 1)"
    )
    nine = " ".join(f"[Image {k}]" for k in range(1, 10))
    assert plan.rewrite_prompt(nine, 9) == " ".join(f"<Picture {k}>" for k in range(1, 10))


def test_references_are_decoded_at_the_models_reference_size() -> None:
    assert plan.reference_box(4000, 3000, 2048) == (2731, 2731)  # 2731x2048 once decoded, either way up
    assert plan.reference_box(3000, 4000, 2048) == (2731, 2731)
    assert plan.reference_box(800, 600, 2048) == (800, 800)  # never upscaled here (the pipeline does)


def test_references_past_4_to_1_are_padded_not_cut() -> None:
    wide = np.zeros((10, 100, 3), np.uint8)
    padded = plan.fit_reference_aspect(wide)
    assert padded.shape == (25, 100, 3)
    assert (padded[:7] == 255).all() and (padded[7:17] == 0).all() and (padded[17:] == 255).all()
    assert plan.fit_reference_aspect(np.zeros((300, 60, 3), np.uint8)).shape == (300, 75, 3)
    square = np.zeros((20, 20, 3), np.uint8)
    assert plan.fit_reference_aspect(square) is square


def test_the_soundtrack_is_trimmed_or_padded_to_the_duration() -> None:
    audio = np.linspace(-2, 2, 2 * 100, dtype=np.float64).reshape(2, 100)
    trimmed = plan.trim_audio(audio, 60)
    assert trimmed.shape == (2, 60) and trimmed.dtype == np.float32
    assert trimmed.min() >= -1 and trimmed.max() <= 1
    padded = plan.trim_audio(audio[:, :10], 30)
    assert padded.shape == (2, 30) and not padded[:, 10:].any()
    assert plan.audio_samples(3, 32000) == 96000


def test_output_frames_have_the_exact_size_count_and_watermark() -> None:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (73, 32, 64, 3), dtype=np.uint8)
    keep = video.copy()
    width, height = sizes.frame_size("480P", "16:9")
    frames = list(plan.output_frames(video, width, height, 72, Watermark(width, height, "wm")))
    assert len(frames) == 72
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(video, keep), "the model's frames are never drawn on"
    # Same size: the frames as they are, cropped to a narrower request at the centre.
    assert np.array_equal(next(plan.output_frames(video, 64, 32, 1, None)), video[0])
    assert np.array_equal(next(plan.output_frames(video, 32, 32, 1, None)), video[0][:, 16:48])
    marked = next(plan.output_frames(video, 64, 32, 1, Watermark(64, 32, "wm")))
    assert not np.array_equal(marked, video[0]) and np.array_equal(video, keep)
    with pytest.raises(ValueError, match="fewer"):
        next(plan.output_frames(video, 64, 32, 74, None))


def _options(**given: object) -> dict[str, object]:
    return check_options("minimax-h3", {"model_dir": "/models/h3", **given})


def test_options_have_diffusers_defaults_and_name_the_bad_key() -> None:
    values = _options()
    assert values["steps"] == 50 and values["device"] == "cuda" and values["dtype"] == "bfloat16"
    assert values["offload"] == "none" and values["max_area"] == 0 and values["lora_path"] == ""
    assert _options(offload="text-encoder:cuda:1")["offload"] == "text-encoder:cuda:1"
    assert _options(offload="model", device="cuda:0", dtype="float32")["offload"] == "model"
    for key, value, message in [
        ("steps", 1, "steps must be at least 2"),
        ("offload", "sequential", "offload must be"),
        ("offload", "text-encoder:tpu", "text encoder's device"),
        ("device", "gpu", "device must be"),
        ("dtype", "float16", "dtype must be one of"),
        ("max_area", -1, "max_area must be at least 0"),
        ("lora_scale", "1", "lora_scale must be a number"),
    ]:
        with pytest.raises(OptionsError, match=message):
            _options(**{key: value})
    with pytest.raises(OptionsError, match="needs 'model_dir'"):
        check_options("minimax-h3", {})
    assert {o.name for o in engine_options("minimax-h3")} >= {
        "model_dir", "steps", "max_area", "lora_path", "lora_scale", "offload", "device", "dtype",
        "cpu_threads", "watermark_text",
    }  # fmt: skip


def test_a_models_file_names_the_bad_minimax_h3_key(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models."h3"]\nengine = "minimax-h3"\nmodel_dir = "/m"\nstep = 8\n')
    with pytest.raises(ModelsFileError, match=r'models\."h3": unknown key .step.'):
        Catalog.from_file(path)
    path.write_text('[models."h3"]\nengine = "minimax-h3"\nmodel_dir = "/m"\noffload = "cpu"\n')
    with pytest.raises(ModelsFileError, match="offload must be"):
        Catalog.from_file(path)


def test_the_options_and_the_plan_import_no_torch() -> None:
    """The API reads the options through the registry; neither they nor the plan may pull in torch."""
    code = (
        "import sys; from videosynth.engines.registry import engine_options; engine_options('minimax-h3');"
        " import videosynth.engines.minimax_h3.plan;"
        " heavy = {'torch', 'diffusers', 'transformers'} & set(sys.modules); assert not heavy, heavy"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
