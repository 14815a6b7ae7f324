"""Turn a reference-to-video prompt into a list of shots for the animatic.

The animatic shows one shot per image reference, in the order the references appear in the prompt.

Image references
----------------
``[Image N]`` with N from 1 to the number of reference images, matched case-insensitively and with optional
spaces inside the brackets: ``[Image 2]``, ``[image 2]``, ``[ Image 2 ]``. Also accepted: full-width brackets
and digits (``【Image 2】``, ``［Image ２］``), ``[Img 2]``, the Chinese forms ``[图2]``, ``[图片2]``,
``[图像2]`` (with either kind of bracket), and the older ``character2`` spelling. A reference to an image
that does not exist is treated as plain text.

How the prompt is cut into shots
--------------------------------
* Every reference starts a new shot. The shot's text runs to the next reference. If the reference sits in
  the middle of a sentence that began after the previous reference, the shot starts at that sentence's
  beginning instead, so "Close-up of [Image 2]" gives the close-up to image 2.
* Text before the first reference belongs to the first shot.
* A reference to the same image as the shot just before it does not start a new shot ("[Image 1] and
  [Image 1]'s hat" is one shot).
* Images that are never referenced follow as extra, shorter shots in index order, with no directions.
* A prompt with no references at all gives one shot per image in order, each with the whole prompt's
  directions and equal time.
* Each shot's share of the video follows the length of its text (a Chinese character counts as three
  Latin letters), with a floor so that a short segment still gets a visible shot.

Camera directions
-----------------
Each shot looks for these words in its own text (English is case-insensitive; plural and -ing verb forms,
hyphens and spaces are accepted, e.g. "pushes in", "zooming in", "close-up", "close up"):

============  ===========================================================  ===========================
kind          English                                                      Chinese
============  ===========================================================  ===========================
close-up      close-up, closeup, close shot                                特写, 近景
medium        medium shot, mid shot, medium close-up counts as close-up    中景
wide          wide shot, long shot, establishing shot, wide angle          全景, 远景
push in       push in, zoom in, dolly in                                   推近, 推镜, 推进
pull back     pull back, pull out, zoom out, dolly out                     拉远, 拉镜, 拉出
pan left      pan left                                                     左摇, 向左摇
pan right     pan right                                                    右摇, 向右摇
pan           pan (no direction: alternates right, left, right ... by      摇镜, 横摇, 镜头…摇 (a 摇
              shot)                                                        near 镜头, so 摇滚 or 摇扇
                                                                           do not count)
tilt up       tilt up                                                      上摇, 向上摇, 仰 (not 仰拍,
                                                                           仰视, 信仰)
tilt down     tilt down                                                    下摇, 向下摇
low angle     low angle, low-angle, worm's-eye                             仰拍, 仰视, 低角度
high angle    high angle, overhead shot, bird's-eye, bird's eye            俯拍, 俯视, 高角度
side          side view, side angle, side shot, from the side, side-on,    侧面, 侧拍, 侧脸
              profile
============  ===========================================================  ===========================

A camera set-up has at most one framing, one camera move and one angle; when several of a kind appear, the
first in the text wins (a specific pan or tilt direction beats a bare "pan"). A set-up without a move is a
still "hold". Words are matched as whole words, so "expand" is not a pan and "beside" is not a side angle.

Two camera set-ups in one shot
------------------------------
A shot's text may ask for a second set-up on the same image: directions, then a joining word, then more
directions (``镜头先以侧面中景勾勒……随即切换至低角度仰拍``, "close-up, then pull back"). Joining words: then,
cut(s) to, switch(es) to, followed by, 随即, 随后, 然后, 接着, 继而, 切换至, 切换到, 切至. The text is split
at the first joining word that has directions both before and after it, so a shot has at most two set-ups.
The second set-up keeps the first one's framing and angle unless it names its own (a switch to a low angle
stays a medium shot); its move is its own. A second set-up identical to the first is no second set-up.

The two set-ups are :attr:`Shot.setups`, each a :class:`Shot` on the same image with its own piece of the
text and its share of the shot (by text length) as its weight. The renderer plays them one after the other
with a hard cut between them (a cut rather than a quick move: it reads as the "switch" the prompts ask for,
and keeps both set-ups clean of blending), and only when the shot is long enough for both; otherwise it
plays the shot itself, whose directions are those of its whole text as above.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from videosynth.engines.markers import REFERENCE_MARKER, marker_number

FRAMINGS = ("close_up", "medium", "wide")
MOVES = ("hold", "push_in", "pull_back", "pan_left", "pan_right", "tilt_up", "tilt_down")
ANGLES = ("low", "high", "side")

# A floor on a shot's text length (in Latin-letter units) so a one-word segment still gets a real shot,
# and the weight of an image that the prompt never mentions.
_MIN_TEXT_UNITS = 24.0
# ... and a floor relative to the average segment, so one very long segment cannot starve the others.
_MIN_SHARE_OF_MEAN = 0.25
_CJK_UNITS = 3.0


@dataclass(frozen=True)
class Shot:
    """One shot of the animatic.

    ``image_index`` is 1-based (``[Image 1]`` is the first reference). ``weight`` is the shot's share of the
    video's duration; the weights of one :func:`parse_shots` result sum to 1. ``setups`` is empty, or the two
    camera set-ups the shot's text asks for (see "Two camera set-ups in one shot"), whose weights are their
    shares of this shot and sum to 1; the shot's own directions are the fallback when there is no room for both.
    """

    image_index: int
    text: str
    framing: str | None = None  # "close_up" | "medium" | "wide"
    move: str = "hold"  # one of MOVES
    angle: str | None = None  # "low" | "high" | "side"
    weight: float = 1.0
    setups: tuple[Shot, ...] = ()


_REFERENCE = REFERENCE_MARKER
# Sentence ends: Latin punctuation followed by a space or the end, any CJK sentence punctuation, newlines.
_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)|[。！？；…\n]")


def _p(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# English verbs may be inflected ("pushes in", "zooming in") and joined by a space or hyphen.
_SEP = r"[\s\-]+"


def _verb(stem: str, particle: str) -> str:
    return rf"\b{stem}(?:s|es|ed|ing)?{_SEP}{particle}\b"


_FRAMING_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("close_up", _p(r"\bclose[\s\-]?ups?\b", rf"\bclose{_SEP}shots?\b", "特写", "近景")),
    ("medium", _p(rf"\b(?:medium|mid){_SEP}shots?\b", "中景")),
    ("wide", _p(rf"\b(?:wide|long|establishing){_SEP}shots?\b", rf"\bwide{_SEP}angle\b", "全景", "远景")),
)

# Specific moves; a bare pan is the fallback below.
_MOVE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("push_in", _p(_verb("push", "in"), _verb("zoom", "in"), _verb("dolly", "in"), "推近", "推镜", "推进")),
    (
        "pull_back",
        _p(
            _verb("pull", "back"),
            _verb("pull", "out"),
            _verb("zoom", "out"),
            _verb("dolly", "out"),
            "拉远",
            "拉镜",
            "拉出",
        ),
    ),
    ("pan_left", _p(_verb("pan", "left"), rf"\bpann(?:ed|ing){_SEP}left\b", "左摇")),
    ("pan_right", _p(_verb("pan", "right"), rf"\bpann(?:ed|ing){_SEP}right\b", "右摇")),
    ("tilt_up", _p(_verb("tilt", "up"), "上摇", r"(?<![信敬景瞻])仰(?![拍视])")),
    ("tilt_down", _p(_verb("tilt", "down"), "下摇")),
)
# "a pan" / "the pan" / "frying pan" are cookware far more often than camera moves.
_BARE_PAN = _p(
    r"(?<!\ba )(?<!\bthe )(?<!frying )\bpan(?:s|ned|ning)?\b",
    "摇镜",
    "横摇",
    r"镜头[^。！？；，,.!?;]{0,6}?摇",
)

_ANGLE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("low", _p(rf"\blow{_SEP}angle\b", r"\bworm'?s?[\s\-]?eye\b", "仰拍", "仰视", "低角度")),
    (
        "high",
        _p(
            rf"\bhigh{_SEP}angle\b",
            rf"\boverhead{_SEP}shots?\b",
            r"\bbird'?s?[\s\-]?eye\b",
            "俯拍",
            "俯视",
            "高角度",
        ),
    ),
    (
        "side",
        _p(
            rf"\bside{_SEP}(?:view|angle|shot)s?\b",
            rf"\bfrom{_SEP}the{_SEP}side\b",
            r"\bside-on\b",
            r"\bprofile\b",
            "侧面",
            "侧拍",
            "侧脸",
        ),
    ),
)


# Words that start a second camera set-up inside one shot's text.
_JOINER = _p(
    r"\bthen\b",
    rf"\b(?:cut|cuts|cutting|switch|switches|switching){_SEP}to\b",
    rf"\bfollowed{_SEP}by\b",
    "随即",
    "随后",
    "然后",
    "接着",
    "继而",
    "切换至",
    "切换到",
    "切至",
)
_NO_DIRECTIONS: tuple[str | None, str, str | None] = (None, "hold", None)


def _first(rules: Sequence[tuple[str, re.Pattern[str]]], text: str) -> str | None:
    """The rule whose pattern matches earliest in ``text`` (ties: the earlier rule)."""
    best: tuple[int, int, str] | None = None
    for order, (name, pattern) in enumerate(rules):
        m = pattern.search(text)
        if m is not None and (best is None or (m.start(), order) < best[:2]):
            best = (m.start(), order, name)
    return None if best is None else best[2]


def parse_directions(text: str, *, pan_ordinal: int = 0) -> tuple[str | None, str, str | None]:
    """``(framing, move, angle)`` for one shot's text.

    A bare "pan" has no direction; ``pan_ordinal`` (the shot's position) picks one deterministically,
    alternating right, left, right ... so consecutive panned shots do not all drift the same way.
    """
    text = unicodedata.normalize("NFKC", text)
    framing = _first(_FRAMING_RULES, text)
    move = _first(_MOVE_RULES, text)
    if move is None:
        move = ("pan_right" if pan_ordinal % 2 == 0 else "pan_left") if _BARE_PAN.search(text) else "hold"
    angle = _first(_ANGLE_RULES, text)
    return framing, move, angle


def camera_setups(image_index: int, text: str, *, pan_ordinal: int = 0) -> tuple[Shot, ...]:
    """The two camera set-ups ``text`` asks for on one image, or ``()`` when it asks for one at most.

    See "Two camera set-ups in one shot" in the module docstring. The second set-up's bare pan takes the
    next ``pan_ordinal``, so "pan, then pan again" swings back.
    """
    for joiner in _JOINER.finditer(text):
        before, after = text[: joiner.start()], text[joiner.start() :]
        first = parse_directions(before, pan_ordinal=pan_ordinal)
        if first == _NO_DIRECTIONS:
            continue  # a "then" in the story before any camera direction: look further on
        framing, move, angle = parse_directions(after, pan_ordinal=pan_ordinal + 1)
        if (framing, move, angle) == _NO_DIRECTIONS:
            return ()  # nothing after this joiner, so nothing after a later one either
        second = (framing or first[0], move, angle or first[2])
        if second == first:
            continue
        units = (max(_text_units(before), 1.0), max(_text_units(after), 1.0))
        return (
            Shot(image_index, before.strip(), *first, weight=units[0] / sum(units)),
            Shot(image_index, after.strip(), *second, weight=units[1] / sum(units)),
        )
    return ()


def _text_units(text: str) -> float:
    """Length of ``text`` without references and spaces; a CJK character counts as a short word."""
    text = _REFERENCE.sub("", text)
    units = 0.0
    for ch in text:
        if ch.isspace():
            continue
        units += _CJK_UNITS if unicodedata.east_asian_width(ch) in ("W", "F") else 1.0
    return units


def _reference_spans(prompt: str, num_images: int) -> list[tuple[int, int, int]]:
    """``(start, end, image_index)`` for every valid reference, in order."""
    spans = []
    for m in _REFERENCE.finditer(prompt):
        n = marker_number(m)
        if 1 <= n <= num_images:
            spans.append((m.start(), m.end(), n))
    return spans


def _segment_start(prompt: str, ref_start: int, floor: int) -> int:
    """Where a shot whose reference starts at ``ref_start`` begins.

    At the start of the reference's sentence when that sentence began after ``floor`` (the previous
    reference's end), otherwise at the reference itself.
    """
    start = ref_start
    for m in _SENTENCE_END.finditer(prompt, floor, ref_start):
        start = m.end()
    # Skip the whitespace after the previous sentence's end so it stays with that sentence.
    while start < ref_start and prompt[start].isspace():
        start += 1
    return start


def parse_shots(prompt: str, num_images: int) -> list[Shot]:
    """The shots for ``prompt`` with ``num_images`` reference images (see the module docstring)."""
    if num_images <= 0:
        return []
    # The prompt is not NFKC-normalised here: that would turn CJK punctuation into Latin punctuation and
    # hide sentence ends. _REFERENCE accepts full-width forms directly; parse_directions normalises a copy.
    prompt = prompt or ""
    spans = _reference_spans(prompt, num_images)

    if not spans:
        shots = []
        for i in range(num_images):
            framing, move, angle = parse_directions(prompt, pan_ordinal=i)
            setups = camera_setups(i + 1, prompt, pan_ordinal=i)
            shots.append(Shot(i + 1, prompt.strip(), framing, move, angle, 1.0 / num_images, setups))
        return shots

    # Segment boundaries: each reference's segment starts at its sentence start (or the previous reference's
    # end), the first one at the beginning of the prompt.
    starts = [0]
    for k in range(1, len(spans)):
        starts.append(_segment_start(prompt, spans[k][0], spans[k - 1][1]))
    segments: list[tuple[int, str]] = []
    for k, (_, _, image) in enumerate(spans):
        end = starts[k + 1] if k + 1 < len(spans) else len(prompt)
        text = prompt[starts[k] : end]
        if segments and segments[-1][0] == image:
            segments[-1] = (image, segments[-1][1] + text)
        else:
            segments.append((image, text))

    referenced = {image for image, _ in segments}
    units = [_text_units(text) for _, text in segments]
    mean_units = sum(units) / len(units)
    floor = max(_MIN_TEXT_UNITS, _MIN_SHARE_OF_MEAN * mean_units)
    raw: list[tuple[int, str, float]] = [
        (image, text.strip(), max(u, floor)) for (image, text), u in zip(segments, units, strict=True)
    ]
    raw += [(i, "", floor) for i in range(1, num_images + 1) if i not in referenced]

    total = sum(w for _, _, w in raw)
    shots = []
    for ordinal, (image, text, w) in enumerate(raw):
        framing, move, angle = parse_directions(text, pan_ordinal=ordinal)
        setups = camera_setups(image, text, pan_ordinal=ordinal)
        shots.append(Shot(image, text, framing, move, angle, w / total, setups))
    return shots


def allocate_frames(shots: Sequence[Shot], total_frames: int, min_frames: int = 12) -> list[int]:
    """Frames per shot, proportional to the shots' weights and summing exactly to ``total_frames``.

    Every shot gets at least ``min_frames`` when that fits (else an equal share, at least 1). With fewer
    frames than shots, the heaviest shots (earlier ones on ties) get one frame each and the rest get 0.
    """
    n = len(shots)
    if total_frames < 0:
        raise ValueError("total_frames must be >= 0")
    if n == 0:
        if total_frames:
            raise ValueError("cannot allocate frames to no shots")
        return []
    # Non-positive or non-finite weights would break the proportions; treat them as negligible.
    weights = [s.weight if math.isfinite(s.weight) and s.weight > 0 else 1e-9 for s in shots]

    if total_frames < n:
        chosen = set(sorted(range(n), key=lambda i: (-weights[i], i))[:total_frames])
        return [1 if i in chosen else 0 for i in range(n)]

    floor = max(1, min(min_frames, total_frames // n))
    # Water-filling: shots whose proportional share is under the floor get the floor, and the rest is shared
    # out again among the others, until every remaining share is at least the floor.
    fixed: set[int] = set()
    while True:
        free = total_frames - floor * len(fixed)
        wsum = sum(weights[i] for i in range(n) if i not in fixed)
        under = {i for i in range(n) if i not in fixed and free * weights[i] / wsum < floor}
        if not under:
            break
        fixed |= under
    ideal = [float(floor) if i in fixed else free * weights[i] / wsum for i in range(n)]
    counts = [max(floor, int(x)) for x in ideal]

    # Largest remainder, ties to the earlier shot; then repair any float-rounding excess.
    short = total_frames - sum(counts)
    order = sorted(range(n), key=lambda i: (-(ideal[i] - int(ideal[i])), i))
    for k in range(max(0, short)):
        counts[order[k % n]] += 1
    while sum(counts) > total_frames:
        i = max(range(n), key=lambda j: (counts[j], -j))
        counts[i] -= 1
    return counts
