"""The wan-vace request mapping (sizes, frame rate, segments, prompt, reference order) and its options.

Pure functions: no torch here (the engine's own tests are in test_wan_vace.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from videosynth import sizes
from videosynth.catalog import Catalog, ModelsFileError
from videosynth.engines.options import OptionsError
from videosynth.engines.registry import check_options
from videosynth.engines.wan_vace import plan
from videosynth.media.watermark import Watermark


@pytest.mark.parametrize("ratio", sizes.RATIOS)
@pytest.mark.parametrize("resolution", sizes.RESOLUTIONS)
def test_generation_sizes_are_the_tier_sizes_in_multiples_of_16(resolution: str, ratio: str) -> None:
    width, height = plan.generation_size(resolution, ratio, "720P")
    assert width % 16 == 0 and height % 16 == 0
    # 1080P is generated at 720P and upscaled; nothing is generated above the model's tier.
    assert (width, height) == sizes.frame_size("480P" if resolution == "480P" else "720P", ratio)
    assert plan.generation_size(resolution, ratio, "480P") == sizes.frame_size("480P", ratio)


@pytest.mark.parametrize("ratio", sizes.RATIOS)
def test_max_area_shrinks_keeping_the_aspect(ratio: str) -> None:
    width, height = plan.generation_size("720P", ratio, "720P", max_area=416 * 240)
    assert width % 16 == 0 and height % 16 == 0 and width * height <= 416 * 240
    table_w, table_h = sizes.frame_size("720P", ratio)
    assert abs(width / height - table_w / table_h) / (table_w / table_h) < 0.2
    assert plan.generation_size("720P", ratio, "720P", max_area=1) == (16, 16)


@pytest.mark.parametrize(("duration", "frames"), [(3, 49), (5, 81), (10, 161), (15, 241)])
def test_model_frames_at_16_fps_are_4k_plus_1(duration: int, frames: int) -> None:
    assert plan.model_frames(duration) == frames
    assert plan.round_up_to_window(frames) == frames


def test_resampling_16_to_24_fps_covers_exactly_the_duration() -> None:
    positions = plan.resample_positions(24 * 5, 24)
    assert len(positions) == 120
    assert positions[:4] == [(0, 0, 0.0), (0, 1, 2 / 3), (1, 2, 1 / 3), (2, 2, 0.0)]
    # Output frame j shows time j/24: source frame (i0 + w) / 16 is the same instant.
    for j, (i0, i1, w) in enumerate(positions):
        assert (i0 + w) / 16 == pytest.approx(j / 24)
        assert i1 <= plan.model_frames(5) - 1
    assert max(i1 for _, i1, _ in positions) == plan.model_frames(5) - 1


@given(
    duration=st.integers(3, 15),
    segment=st.sampled_from([17, 33, 49, 81]),
    overlap=st.integers(1, 9),
    refs=st.integers(1, 9),
)
def test_segments_cover_the_video_with_their_overlaps(
    duration: int, segment: int, overlap: int, refs: int
) -> None:
    total = plan.model_frames(duration)
    minimum = plan.min_frames_for_references(refs)
    segments = plan.plan_segments(total, segment, overlap, minimum)
    assert segments[0].start == 0 and segments[0].keep == 0
    for before, after in itertools.pairwise(segments):
        assert after.start == before.start + before.length - overlap and after.keep == overlap
    last = segments[-1]
    assert last.start + last.length >= total
    for s in segments:
        assert (s.length - 1) % 4 == 0 and s.length >= minimum
        assert s.length <= max(segment, plan.round_up_to_window(minimum))
    if total <= segment:
        assert len(segments) == 1


def test_a_12_second_video_is_three_segments_of_81_frames_by_default() -> None:
    segments = plan.plan_segments(plan.model_frames(12), 81, 16)
    assert [(s.start, s.length, s.keep) for s in segments] == [(0, 81, 0), (65, 81, 16), (130, 65, 16)]


def test_stitching_cross_fades_the_shared_frames() -> None:
    video = np.zeros((12, 2, 2, 3), np.uint8)
    plan.stitch(video, plan.Segment(0, 9, 0), np.full((9, 2, 2, 3), 90, np.uint8))
    plan.stitch(video, plan.Segment(6, 9, 3), np.full((9, 2, 2, 3), 210, np.uint8))
    column = video[:, 0, 0, 0].tolist()
    # 90 until the seam, then 90 -> 210 over the 3 shared frames (weights 1/4, 2/4, 3/4), then 210.
    assert column == [90] * 6 + [120, 150, 180] + [210] * 3


def test_output_frames_have_the_exact_size_count_and_watermark() -> None:
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (plan.model_frames(3), 64, 112, 3), dtype=np.uint8)
    keep = video.copy()
    width, height = sizes.frame_size("1080P", "16:9")
    frames = list(plan.output_frames(video, width, height, 72, 24, Watermark(width, height, "wm")))
    assert len(frames) == 72
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(video, keep), "the model's frames are shown several times: never drawn on"
    plain = list(plan.output_frames(video, 112, 64, 72, 24, None))
    assert np.array_equal(plain[0], video[0]) and np.array_equal(plain[3], video[2])
    blended = (video[0].astype(np.float32) / 3 + video[1].astype(np.float32) * 2 / 3).round()
    assert np.abs(plain[1].astype(np.float32) - blended).max() <= 1


def test_markers_become_words_the_text_encoder_knows() -> None:
    assert (
        plan.rewrite_prompt("[Image 1] walks with [image 2] on 【图3】 and [Image 7].", 3)
        == "reference image 1 walks with reference image 2 on 参考图3 and [Image 7]."
    )


def test_references_are_handed_over_reversed_so_image_1_comes_first() -> None:
    # diffusers prepends each reference in turn; the engine's test checks the latent order itself.
    assert plan.reference_order([1, 2, 3]) == [3, 2, 1]


def _options(**given: object) -> dict[str, object]:
    return check_options("wan-vace", {"model_dir": "/models/wan", **given})


def test_options_take_the_profiles_defaults_and_check_combinations() -> None:
    from videosynth.engines.wan_vace.options import resolve

    quality = resolve(_options())
    assert (quality.steps, quality.guidance_scale, quality.fp8, quality.cache) == (50, 5.0, False, "none")
    fast = resolve(_options(profile="fast", lora_path="/models/lora.safetensors"))
    assert (fast.steps, fast.guidance_scale, fast.fp8, fast.cache) == (4, 1.0, True, "first_block")
    tuned = resolve(_options(profile="fast", lora_path="/l", steps=6, fp8="off", cache="none"))
    assert (tuned.steps, tuned.fp8, tuned.cache) == (6, False, "none")
    with pytest.raises(OptionsError, match="lora_path"):
        _options(profile="fast")
    with pytest.raises(OptionsError, match="4k\\+1"):
        _options(segment_frames=80)
    with pytest.raises(OptionsError, match="segment_overlap"):
        _options(segment_frames=33, segment_overlap=30)


def test_a_models_file_names_the_bad_wan_vace_key(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models."happyhorse-1.1-r2v"]\nengine = "wan-vace"\nmodel_dir = "/m"\nstep = 4\n')
    with pytest.raises(ModelsFileError, match=r'models\."happyhorse-1\.1-r2v": unknown key .step.'):
        Catalog.from_file(path)
    path.write_text('[models."happyhorse-1.1-r2v"]\nengine = "wan-vace"\n')
    with pytest.raises(ModelsFileError, match="needs 'model_dir'"):
        Catalog.from_file(path)
    path.write_text('[models."m"]\nengine = "wan-vace"\nmodel_dir = "/m"\nprofile = "fast"\n')
    with pytest.raises(ModelsFileError, match="lora_path"):
        Catalog.from_file(path)
