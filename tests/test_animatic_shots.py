"""Prompt -> shots: reference order, segmentation, camera vocabulary (English, Chinese), frame allocation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videosynth.engines.animatic.shots import (
    ANGLES,
    FRAMINGS,
    MOVES,
    Shot,
    allocate_frames,
    parse_directions,
    parse_shots,
)


def images(shots: list[Shot]) -> list[int]:
    return [s.image_index for s in shots]


# ------------------------------------------------------------------------------------------ references


def test_shots_follow_reference_order() -> None:
    shots = parse_shots("[Image 3] opens the door. [Image 1] waits. [Image 2] sings.", 3)
    assert images(shots) == [3, 1, 2]
    assert shots[0].text == "[Image 3] opens the door."
    assert shots[1].text == "[Image 1] waits."
    assert shots[2].text == "[Image 2] sings."


@pytest.mark.parametrize(
    "ref",
    [
        "[Image 2]",
        "[image 2]",
        "[IMAGE 2]",
        "[ Image 2 ]",
        "[Image2]",
        "【Image 2】",
        "［Image ２］",
        "[图2]",
        "[图片2]",
        "【图片 2】",
        "[Img 2]",
        "character2",
    ],
)
def test_reference_spellings(ref: str) -> None:
    shots = parse_shots(f"[Image 1] stands still. {ref} runs.", 2)
    assert images(shots) == [1, 2]
    assert "runs" in shots[1].text


def test_text_before_the_first_reference_belongs_to_the_first_shot() -> None:
    shots = parse_shots("Close-up. Slowly, [Image 2] turns around. [Image 1] watches.", 2)
    assert images(shots) == [2, 1]
    assert shots[0].text.startswith("Close-up.")
    assert shots[0].framing == "close_up"
    assert shots[1].framing is None


def test_repeated_reference_in_one_sentence_is_one_shot() -> None:
    shots = parse_shots("[Image 1] and [Image 1]'s hat float away.", 1)
    assert len(shots) == 1
    assert shots[0].text == "[Image 1] and [Image 1]'s hat float away."


def test_consecutive_same_image_segments_merge() -> None:
    shots = parse_shots("[Image 1] walks. [Image 1] sits. [Image 2] waves. [Image 1] leaves.", 2)
    assert images(shots) == [1, 2, 1]
    assert shots[0].text == "[Image 1] walks. [Image 1] sits."


def test_a_sentence_that_names_an_image_mid_way_goes_to_that_image() -> None:
    shots = parse_shots("[Image 1] walks in. The camera pushes in on [Image 2], smiling.", 2)
    assert shots[0].move == "hold"
    assert shots[1].move == "push_in"
    assert shots[1].text == "The camera pushes in on [Image 2], smiling."


def test_unreferenced_images_follow_with_neutral_text() -> None:
    shots = parse_shots("[Image 4] dances, close-up, push in. [Image 2] bows.", 5)
    assert images(shots) == [4, 2, 1, 3, 5]
    for extra in shots[2:]:
        assert extra.text == ""
        assert (extra.framing, extra.move, extra.angle) == (None, "hold", None)
    assert shots[0].move == "push_in" and shots[0].framing == "close_up"


def test_references_beyond_the_image_count_are_plain_text() -> None:
    shots = parse_shots("[Image 1] meets [Image 7]. [Image 0] too.", 2)
    assert images(shots) == [1, 2]
    assert "[Image 7]" in shots[0].text


def test_no_references_gives_one_shot_per_image_with_the_prompt_directions() -> None:
    shots = parse_shots("A slow zoom in on a quiet garden", 3)
    assert images(shots) == [1, 2, 3]
    assert all(s.move == "push_in" for s in shots)
    assert all(s.weight == pytest.approx(1 / 3) for s in shots)


def test_no_images_no_shots() -> None:
    assert parse_shots("[Image 1] hello", 0) == []


def test_empty_prompt() -> None:
    shots = parse_shots("", 2)
    assert images(shots) == [1, 2]
    assert all(s.move == "hold" for s in shots)


def test_chinese_prompt() -> None:
    prompt = (
        "[Image 1]中身着红色旗袍的女性，特写，镜头推近。"
        "[Image 2]中的折扇，镜头缓缓向左摇……"
        "[图3]中的流苏耳坠，仰拍"
    )
    shots = parse_shots(prompt, 3)
    assert images(shots) == [1, 2, 3]
    assert (shots[0].framing, shots[0].move) == ("close_up", "push_in")
    assert shots[1].move == "pan_left"
    assert shots[2].angle == "low"
    assert shots[2].move == "hold"
    # Chinese punctuation ends sentences: the next sentence's directions do not leak back.
    shots = parse_shots("[Image 1]站着。特写[Image 2]微笑", 2)
    assert shots[0].framing is None and shots[1].framing == "close_up"


# ------------------------------------------------------------------------------------------ weights


def test_weights_follow_text_length_and_sum_to_one() -> None:
    long = "[Image 1] " + "walks slowly across the long empty hall, " * 6
    shots = parse_shots(long + "[Image 2] nods.", 2)
    assert sum(s.weight for s in shots) == pytest.approx(1.0)
    assert shots[0].weight > 2 * shots[1].weight
    assert shots[1].weight > 0.05  # the floor keeps a short segment visible


def test_chinese_characters_weigh_more_than_latin_letters() -> None:
    shots = parse_shots("[Image 1]女孩在雨中慢慢走过长长的街道。[Image 2] a girl walks.", 2)
    assert shots[0].weight > shots[1].weight


# ------------------------------------------------------------------------------------------ vocabulary

CASES = [
    # (text, framing, move, angle)
    ("close-up of her face", "close_up", "hold", None),
    ("Close Up", "close_up", "hold", None),
    ("a CLOSEUP", "close_up", "hold", None),
    ("特写镜头", "close_up", "hold", None),
    ("近景", "close_up", "hold", None),
    ("medium shot", "medium", "hold", None),
    ("中景", "medium", "hold", None),
    ("wide shot of the city", "wide", "hold", None),
    ("long shot", "wide", "hold", None),
    ("an establishing shot", "wide", "hold", None),
    ("全景", "wide", "hold", None),
    ("远景", "wide", "hold", None),
    ("push in", None, "push_in", None),
    ("the camera pushes in", None, "push_in", None),
    ("zoom in", None, "push_in", None),
    ("zooming in slowly", None, "push_in", None),
    ("dolly-in", None, "push_in", None),
    ("镜头推近", None, "push_in", None),
    ("推镜", None, "push_in", None),
    ("缓缓推进", None, "push_in", None),
    ("pull back", None, "pull_back", None),
    ("pulls out", None, "pull_back", None),
    ("Zoom out", None, "pull_back", None),
    ("dolly out", None, "pull_back", None),
    ("镜头拉远", None, "pull_back", None),
    ("拉镜", None, "pull_back", None),
    ("pan left", None, "pan_left", None),
    ("panning left", None, "pan_left", None),
    ("左摇", None, "pan_left", None),
    ("镜头向左摇", None, "pan_left", None),
    ("pan right", None, "pan_right", None),
    ("pans right", None, "pan_right", None),
    ("右摇", None, "pan_right", None),
    ("向右摇", None, "pan_right", None),
    ("tilt up", None, "tilt_up", None),
    ("tilting up", None, "tilt_up", None),
    ("上摇", None, "tilt_up", None),
    ("仰望天空", None, "tilt_up", None),
    ("tilt down", None, "tilt_down", None),
    ("下摇", None, "tilt_down", None),
    ("low angle", None, "hold", "low"),
    ("a low-angle shot", None, "hold", "low"),
    ("仰拍", None, "hold", "low"),
    ("仰视", None, "hold", "low"),
    ("high angle", None, "hold", "high"),
    ("bird's-eye view", None, "hold", "high"),
    ("俯拍", None, "hold", "high"),
    ("俯视", None, "hold", "high"),
    ("side view", None, "hold", "side"),
    ("in profile", None, "hold", "side"),
    ("侧面", None, "hold", "side"),
    ("侧拍", None, "hold", "side"),
    ("close-up, push in, low angle", "close_up", "push_in", "low"),
    ("特写，推近，俯拍", "close_up", "push_in", "high"),
    ("wide shot, pan left, from the side", "wide", "pan_left", "side"),
]


@pytest.mark.parametrize(("text", "framing", "move", "angle"), CASES)
def test_vocabulary(text: str, framing: str | None, move: str, angle: str | None) -> None:
    assert parse_directions(text) == (framing, move, angle)


@pytest.mark.parametrize(
    "text",
    [
        "she cooks eggs in a pan",
        "the frying pan sizzles",
        "摇滚乐队在演奏",  # rock band
        "她轻摇折扇",  # she waves the fan
        "我的信仰",  # faith
        "he sits beside her",
        "they expand the map",
        "walks in and zooms past",
        "a closet of clothes",
    ],
)
def test_no_false_positives(text: str) -> None:
    assert parse_directions(text) == (None, "hold", None)


def test_bare_pan_direction_is_deterministic_and_alternates() -> None:
    assert parse_directions("a slow pan across the hills", pan_ordinal=0)[1] == "pan_right"
    assert parse_directions("a slow pan across the hills", pan_ordinal=1)[1] == "pan_left"
    assert parse_directions("镜头缓缓摇向远方", pan_ordinal=0)[1] == "pan_right"
    assert parse_directions("摇镜头", pan_ordinal=3)[1] == "pan_left"
    shots = parse_shots("[Image 1] pan over the field. [Image 2] pan across the sea.", 2)
    assert [s.move for s in shots] == ["pan_right", "pan_left"]
    assert parse_shots("[Image 1] pan over the field. [Image 2] pan across the sea.", 2) == shots


def test_specific_direction_beats_bare_pan() -> None:
    assert parse_directions("the camera pans, then pans left")[1] == "pan_left"


def test_first_direction_of_a_kind_wins() -> None:
    assert parse_directions("zoom out, then push in")[1] == "pull_back"
    assert parse_directions("wide shot then close-up")[0] == "wide"


def test_parsed_values_are_in_the_vocabulary() -> None:
    for text, *_ in CASES:
        framing, move, angle = parse_directions(text)
        assert framing is None or framing in FRAMINGS
        assert move in MOVES
        assert angle is None or angle in ANGLES


# ------------------------------------------------------------------------------------------ allocation


def shot(weight: float) -> Shot:
    return Shot(1, "", weight=weight)


def test_allocation_is_proportional() -> None:
    assert allocate_frames([shot(0.5), shot(0.25), shot(0.25)], 120) == [60, 30, 30]


def test_allocation_honours_the_floor() -> None:
    counts = allocate_frames([shot(0.98), shot(0.01), shot(0.01)], 120, min_frames=12)
    assert counts == [96, 12, 12]


def test_allocation_with_fewer_frames_than_the_floor_allows() -> None:
    counts = allocate_frames([shot(1.0)] * 9, 20, min_frames=12)
    assert sum(counts) == 20 and min(counts) >= 2


def test_allocation_with_fewer_frames_than_shots() -> None:
    counts = allocate_frames([shot(0.1), shot(0.5), shot(0.4)], 2)
    assert counts == [0, 1, 1]
    assert allocate_frames([shot(1.0)] * 3, 0) == [0, 0, 0]


def test_allocation_edge_cases() -> None:
    assert allocate_frames([], 0) == []
    with pytest.raises(ValueError):
        allocate_frames([], 5)
    with pytest.raises(ValueError):
        allocate_frames([shot(1.0)], -1)
    assert allocate_frames([shot(0.0), shot(float("nan"))], 10) == [5, 5]


@settings(max_examples=300, deadline=None)
@given(
    weights=st.lists(
        st.one_of(
            st.floats(min_value=0.0, max_value=1e6), st.just(0.0), st.floats(min_value=1e-9, max_value=1e-6)
        ),
        min_size=1,
        max_size=12,
    ),
    total=st.integers(min_value=0, max_value=2000),
    min_frames=st.integers(min_value=0, max_value=48),
)
def test_allocation_properties(weights: list[float], total: int, min_frames: int) -> None:
    shots = [shot(w) for w in weights]
    counts = allocate_frames(shots, total, min_frames=min_frames)
    assert len(counts) == len(shots)
    assert sum(counts) == total
    assert all(c >= 0 for c in counts)
    if total >= len(shots):
        assert min(counts) >= max(1, min(min_frames, total // len(shots)))
    else:
        assert all(c in (0, 1) for c in counts)


@settings(max_examples=100, deadline=None)
@given(
    prompt=st.text(
        alphabet=st.sampled_from(list("ab .,[]【】图片Image 0123456789推近特写。pan left")), max_size=120
    ),
    n=st.integers(min_value=1, max_value=9),
)
def test_parse_shots_never_fails_and_covers_every_image(prompt: str, n: int) -> None:
    shots = parse_shots(prompt, n)
    assert set(images(shots)) == set(range(1, n + 1))
    assert sum(s.weight for s in shots) == pytest.approx(1.0)
    assert all(s.weight > 0 for s in shots)
    assert all(a != b for a, b in itertools.pairwise(images(shots)))
