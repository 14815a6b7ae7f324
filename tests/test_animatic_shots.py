"""Prompt -> shots: reference order, segmentation, camera vocabulary (English, Chinese), two camera set-ups in
one shot, frame allocation, and the timeline (every reference's clean view, dissolves)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videosynth.engines.animatic.render import Slot, dissolves, schedule, shot_zoom
from videosynth.engines.animatic.shots import (
    ANGLES,
    FRAMINGS,
    MOVES,
    Shot,
    allocate_frames,
    parse_directions,
    parse_shots,
)

# The seed request of the HappyHorse r2v docs (the official sample prompt, three references).
SEED_PROMPT = (
    "[Image 1]中身着红色旗袍的女性，镜头先以侧面中景勾勒旗袍修身剪裁与S型曲线，随即切换至低角度仰拍，"
    "捕捉她轻抬玉手展开[Image 2]中的折扇的同时，[Image 3]中的流苏耳坠随头部转动轻盈摆动的细节，"
    "最后推近至面部特写，定格在她指尖轻点扇骨、眼波流转间的含蓄风情，多视角全方位展现东方韵味。"
)
FPS = 24
ONE_SECOND = FPS


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


# ---------------------------------------------------------------------------- two set-ups in one shot


def camera(s: Shot) -> tuple[str | None, str, str | None]:
    return (s.framing, s.move, s.angle)


def test_the_seed_prompt_gives_image_1_two_set_ups() -> None:
    first, fan, earrings = parse_shots(SEED_PROMPT, 3)
    assert [camera(s) for s in first.setups] == [("medium", "hold", "side"), ("medium", "hold", "low")]
    assert first.setups[0].text.endswith("S型曲线，") and first.setups[1].text.startswith(
        "随即切换至低角度仰拍"
    )
    assert all(s.image_index == 1 for s in first.setups)
    assert sum(s.weight for s in first.setups) == pytest.approx(1.0)
    # The shot itself keeps the directions of its whole text, for when there is no room for two set-ups.
    assert camera(first) == ("medium", "hold", "side")
    assert fan.setups == () and earrings.setups == ()  # "最后推近至面部特写" has no direction before it


@pytest.mark.parametrize(
    ("text", "first", "second"),
    [
        ("close-up, then pull back", ("close_up", "hold", None), ("close_up", "pull_back", None)),
        (
            "A wide shot of the street that cuts to a close-up",
            ("wide", "hold", None),
            ("close_up", "hold", None),
        ),
        ("low angle, camera switches to a side view", (None, "hold", "low"), (None, "hold", "side")),
        ("pan left, then pan right", (None, "pan_left", None), (None, "pan_right", None)),
        ("近景，然后镜头拉远", ("close_up", "hold", None), ("close_up", "pull_back", None)),
        ("俯拍全景，接着推近", ("wide", "hold", "high"), ("wide", "push_in", "high")),
        # A "then" in the story before any direction is passed over; the next joiner splits.
        (
            "She sits, then smiles. Close-up, then zoom out",
            ("close_up", "hold", None),
            ("close_up", "pull_back", None),
        ),
    ],
)
def test_a_joined_second_direction_is_a_second_set_up(
    text: str, first: tuple[str | None, str, str | None], second: tuple[str | None, str, str | None]
) -> None:
    (shot,) = parse_shots(f"[Image 1] {text}", 1)
    assert [camera(s) for s in shot.setups] == [first, second]
    assert all(s.text and s.text in shot.text for s in shot.setups)


@pytest.mark.parametrize(
    "text",
    [
        "close-up of her face, then she walks away",  # nothing after the joiner
        "she smiles, then the camera pushes in",  # nothing before it: one set-up, a push
        "close-up, then another close-up",  # the same set-up twice
        "a close-up; authentic, thence westward",  # "then" only as a whole word
        "close-up, push in",  # no joiner
    ],
)
def test_no_second_set_up(text: str) -> None:
    (shot,) = parse_shots(f"[Image 1] {text}", 1)
    assert shot.setups == ()


def test_shot_zoom_covers_the_second_set_up() -> None:
    # The engine loads each image at the resolution its most zoomed-in framing needs.
    (shot,) = parse_shots("[Image 1] wide shot, then cut to a close-up", 1)
    assert camera(shot) == ("wide", "hold", None)
    assert shot_zoom(shot) == pytest.approx(shot_zoom(shot.setups[1])) and shot_zoom(shot) > 1.5


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


@settings(max_examples=100, deadline=None)
@given(
    prompt=st.lists(
        st.sampled_from(
            ["a", " ", ".", "，", "[Image 1]", "[Image 2]", "特写", "然后", "then", "pan left", "仰拍"]
        ),
        max_size=40,
    ).map("".join),
    n=st.integers(min_value=1, max_value=3),
)
def test_set_ups_are_pieces_of_their_shot(prompt: str, n: int) -> None:
    for shot in parse_shots(prompt, n):
        assert len(shot.setups) in (0, 2)
        assert all(s.image_index == shot.image_index and s.setups == () for s in shot.setups)
        assert all(s.text in shot.text for s in shot.setups)
        if shot.setups:
            assert sum(s.weight for s in shot.setups) == pytest.approx(1.0)
            assert camera(shot.setups[0]) != camera(shot.setups[1])


# ------------------------------------------------------------------------------------------ timeline


def clean_views(shots: list[Shot], seconds: int) -> dict[int, int]:
    """Frames per image that show it outside every dissolve, from the schedule and the dissolve frames."""
    total = seconds * FPS
    slots = schedule(shots, total, FPS)
    assert [t for slot in slots for t in slot.frames] == list(range(total))  # every frame in one slot
    blended = {t for fade in dissolves(shots, total, FPS) for t in fade}
    views: dict[int, int] = {}
    for slot in slots:
        views[slot.shot.image_index] = views.get(slot.shot.image_index, 0) + sum(
            t not in blended for t in slot.frames
        )
    return views


def nine_references() -> list[Shot]:
    # Very unequal texts, so a share by text length alone would starve the short ones.
    return parse_shots(
        " ".join(f"[Image {i}] {'a slow walk ' * (1 + 12 * (i == 5))}." for i in range(1, 10)), 9
    )


@pytest.mark.parametrize("seconds", [3, 5])
def test_the_seed_prompt_shows_every_reference_for_a_second(seconds: int) -> None:
    shots = parse_shots(SEED_PROMPT, 3)
    views = clean_views(shots, seconds)
    assert sorted(views) == [1, 2, 3]
    assert min(views.values()) >= ONE_SECOND, views


def test_the_seed_prompt_keeps_its_dissolves_at_five_seconds() -> None:
    fades = dissolves(parse_shots(SEED_PROMPT, 3), 5 * FPS, FPS)
    assert [len(f) for f in fades] == [6, 6]  # the full quarter second: 5 s has room for it


def test_nine_references_in_fifteen_seconds_each_get_a_second_and_full_dissolves() -> None:
    shots = nine_references()
    views = clean_views(shots, 15)
    assert sorted(views) == list(range(1, 10))
    assert min(views.values()) >= ONE_SECOND, views
    assert views[5] > 2 * ONE_SECOND  # the long text still gets the longer shot
    assert [len(f) for f in dissolves(shots, 15 * FPS, FPS)] == [6] * 8


def test_nine_references_in_three_seconds_share_the_time_equally_with_hard_cuts() -> None:
    shots = nine_references()
    assert dissolves(shots, 3 * FPS, FPS) == []  # the dissolves go first
    assert clean_views(shots, 3) == dict.fromkeys(range(1, 10), 3 * FPS // 9)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=9),
    seconds=st.integers(min_value=3, max_value=15),
)
def test_dissolves_give_way_before_clean_views(lengths: list[int], seconds: int) -> None:
    n = len(lengths)
    shots = parse_shots(" ".join(f"[Image {i + 1}] {'word ' * k}." for i, k in enumerate(lengths)), n)
    views = clean_views(shots, seconds)
    total = seconds * FPS
    fades = dissolves(shots, total, FPS)
    if total >= n * ONE_SECOND + 6 * (n - 1):
        assert [len(f) for f in fades] == [6] * (n - 1)  # room for everything
    if total >= n * ONE_SECOND:
        assert min(views.values()) >= ONE_SECOND, views
    else:
        assert fades == []
        assert min(views.values()) >= total // n and max(views.values()) <= total // n + n, views


@pytest.mark.parametrize("seconds", [3, 5, 15])
def test_the_seed_prompt_plays_both_set_ups_of_image_1_joined_by_a_cut(seconds: int) -> None:
    shots = parse_shots(SEED_PROMPT, 3)
    slots = schedule(shots, seconds * FPS, FPS)
    image_1 = [slot for slot in slots if slot.shot.image_index == 1]
    assert [camera(slot.shot) for slot in image_1] == [("medium", "hold", "side"), ("medium", "hold", "low")]
    assert [slot.part for slot in image_1] == [0, 1]
    cut = image_1[1].frames.start
    assert all(cut not in fade and cut - 1 not in fade for fade in dissolves(shots, seconds * FPS, FPS))
    assert all(len(slot.frames) >= ONE_SECOND // 2 for slot in image_1)


def test_a_shot_too_short_for_two_set_ups_plays_as_one() -> None:
    prompt = "[Image 1] close-up, then pull back. " + " ".join(f"[Image {i}] b." for i in range(2, 10))
    shots = parse_shots(prompt, 9)
    assert len(shots[0].setups) == 2
    first: Slot = schedule(shots, 3 * FPS, FPS)[0]  # 8 frames: no room for two half-second set-ups
    assert first.shot is shots[0] and camera(first.shot) == ("close_up", "pull_back", None)
    assert len(first.frames) == 8
