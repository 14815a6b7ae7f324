"""The animatic engine and its renderer: real images in, real MP4s out, decoded back with PyAV."""

from __future__ import annotations

import hashlib
import itertools
import threading
import tracemalloc
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from test_encode import picture_types, top_level_atoms
from videosynth.engines.animatic import (
    AnimaticEngine,
    dissolves,
    load_reference,
    parse_shots,
    picture_hints,
    render_frames,
    schedule,
    watermark_box,
)
from videosynth.engines.animatic.shots import Shot
from videosynth.engines.base import Frames, GenerationRequest, ReferenceImage
from videosynth.errors import Canceled, EngineError, InvalidImageFormat
from videosynth.media.encode import PictureHint
from videosynth.sizes import FPS, FRAME_SIZES
from videosynth.worker.video import make_video

# ------------------------------------------------------------------------------------------ helpers


def pattern(seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """A colourful, detailed test picture with a 'face' in the upper middle."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 120 * np.sin(x / (17 + 3 * seed) + seed)
    g = 128 + 120 * np.sin(y / (13 + 2 * seed) + 2 * seed)
    b = 128 + 120 * np.sin((x + y) / (29 + seed) + 3 * seed)
    im = Image.fromarray(np.dstack([r, g, b]).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    draw.ellipse(
        [width * 0.35, height * 0.12, width * 0.65, height * 0.52], fill=(235, 200, 170), outline=0, width=3
    )
    draw.rectangle([width * 0.05, height * 0.7, width * 0.3, height * 0.95], fill=(20 * seed % 255, 90, 200))
    return np.asarray(im)


def write_refs(tmp_path: Path, count: int, size: tuple[int, int] = (640, 480)) -> list[ReferenceImage]:
    refs = []
    for i in range(count):
        w, h = size if i % 2 == 0 else (size[1], size[0])
        path = tmp_path / f"ref{i + 1}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pattern(i + 1, w, h)).save(path, quality=92)
        refs.append(ReferenceImage(index=i + 1, path=path, width=w, height=h))
    return refs


def request(
    refs: list[ReferenceImage],
    prompt: str,
    resolution: str = "720P",
    ratio: str = "16:9",
    duration: int = 3,
    seed: int = 42,
    watermark: bool = False,
) -> GenerationRequest:
    width, height = FRAME_SIZES[(resolution, ratio)]
    return GenerationRequest(
        prompt=prompt,
        references=tuple(refs),
        resolution=resolution,
        ratio=ratio,
        width=width,
        height=height,
        duration=duration,
        fps=FPS,
        seed=seed,
        watermark=watermark,
    )


class Progress:
    def __init__(self, cancel_at: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.cancel_at = cancel_at
        self.error: Canceled | None = None

    def __call__(self, done: int, total: int, stage: str | None = None) -> None:
        self.calls.append((done, total))
        if self.cancel_at is not None and done >= self.cancel_at:
            self.error = Canceled()
            raise self.error


def digest(frames: list[np.ndarray]) -> list[str]:
    return [hashlib.sha256(f.tobytes()).hexdigest() for f in frames]


def render(
    shots: list[Shot], imgs: list[np.ndarray], w: int = 320, h: int = 180, n: int = 72, **kw: object
) -> list[np.ndarray]:
    kw.setdefault("seed", 1)
    kw.setdefault("watermark", False)
    return list(render_frames(shots, imgs, w, h, 24, n, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def imgs() -> list[np.ndarray]:
    return [pattern(1), pattern(2, 480, 640), pattern(3, 800, 300)]


# ------------------------------------------------------------------------------------------ engine


@pytest.mark.parametrize(("resolution", "ratio"), sorted(FRAME_SIZES))
def test_every_size(tmp_path: Path, resolution: str, ratio: str) -> None:
    refs = write_refs(tmp_path, 2, (320, 240))
    req = request(refs, "[Image 1] waves. Close-up of [Image 2].", resolution, ratio, duration=3)
    out = tmp_path / "out.mp4"
    result = make_video(AnimaticEngine(), req, out, Progress())
    assert result.frames == 72
    assert result.duration == pytest.approx(3.0)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.format.name == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == FRAME_SIZES[(resolution, ratio)]
        assert stream.average_rate == 24
        assert sum(1 for _ in container.decode(stream)) == 72
    atoms = top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")


def test_fifteen_seconds(tmp_path: Path) -> None:
    refs = write_refs(tmp_path, 3)
    req = request(refs, "[Image 1] smiles. [Image 2] pushes in. [Image 3] pan left.", duration=15)
    out = tmp_path / "long.mp4"
    progress = Progress()
    result = make_video(AnimaticEngine(), req, out, progress)
    assert result.frames == 360 and result.duration == pytest.approx(15.0)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == 360
        assert float(stream.duration * stream.time_base) == pytest.approx(15.0)
    # Regular progress: never more than 12 frames apart, ending at (total, total).
    done = [d for d, _ in progress.calls]
    assert all(t == 360 for _, t in progress.calls)
    assert done[0] == 0 and done[-1] == 360
    assert max(b - a for a, b in itertools.pairwise(done)) <= 12
    assert done == sorted(done)


def test_cancel_propagates_and_leaves_no_file(tmp_path: Path) -> None:
    refs = write_refs(tmp_path, 2)
    out = tmp_path / "cancel.mp4"
    progress = Progress(cancel_at=24)
    with pytest.raises(Canceled) as caught:
        make_video(AnimaticEngine(), request(refs, "[Image 1] push in. [Image 2]."), out, progress)
    assert caught.value is progress.error  # untouched, not wrapped
    assert not out.exists()
    assert not any(
        t.is_alive() and (t.name == "videosynth-frame-producer" or t.name.startswith("animatic-next-shot"))
        for t in threading.enumerate()
    )


def test_cancel_before_rendering(tmp_path: Path) -> None:
    refs = write_refs(tmp_path, 2)
    out = tmp_path / "cancel0.mp4"
    with pytest.raises(Canceled):
        make_video(AnimaticEngine(), request(refs, "[Image 1]"), out, Progress(cancel_at=0))
    assert not out.exists()


def test_undecodable_reference_is_an_invalid_file(tmp_path: Path) -> None:
    # The worker checks headers only, so the engine is where bad pixel data is found.
    refs = write_refs(tmp_path, 2)
    data = refs[1].path.read_bytes()
    refs[1].path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "bad.mp4"
    with pytest.raises(InvalidImageFormat, match=r"Failed to decode the image \[Image 2\]") as caught:
        make_video(AnimaticEngine(), request(refs, "[Image 1] [Image 2]"), out, Progress())
    assert caught.value.__cause__ is not None
    assert not out.exists()


def test_unexpected_errors_are_wrapped_and_clean_up(tmp_path: Path) -> None:
    refs = write_refs(tmp_path, 1)
    out = tmp_path / "boom.mp4"

    def on_progress(done: int, total: int, stage: str | None = None) -> None:
        if done >= 30:
            raise RuntimeError("disk on fire")

    with pytest.raises(EngineError, match=r"could not make the video \(RuntimeError\)") as caught:
        make_video(AnimaticEngine(), request(refs, "[Image 1]"), out, on_progress)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert not out.exists()


def test_no_references_is_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError):
        make_video(AnimaticEngine(), request([], "hello"), tmp_path / "x.mp4", Progress())
    assert not (tmp_path / "x.mp4").exists()


def test_engine_output_is_deterministic(tmp_path: Path) -> None:
    refs = write_refs(tmp_path, 2)
    req = request(refs, "[Image 1] zoom in. [Image 2] pan right.", resolution="720P", ratio="1:1", seed=7)
    decoded = []
    for name in ("a.mp4", "b.mp4"):
        make_video(AnimaticEngine(), req, tmp_path / name, Progress())
        with av.open(str(tmp_path / name)) as container:
            decoded.append(digest([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    assert decoded[0] == decoded[1]


# ------------------------------------------------------------------------------------------ images


def test_load_reference_applies_exif_orientation(tmp_path: Path) -> None:
    arr = pattern(1, 320, 200)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_reference(path, 4000, 4000)
    assert out.shape == (320, 200, 3)
    expected = np.asarray(Image.fromarray(arr).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


def test_load_reference_downscales_large_images(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(pattern(2, 3000, 2000)).save(path, quality=90)
    out = load_reference(path, 640, 360)
    assert out.dtype == np.uint8 and out.shape[2] == 3
    assert out.shape[1] <= 640 and out.shape[0] <= 360
    assert max(out.shape[1] / 640, out.shape[0] / 360) > 0.98  # fits the box, not much smaller


def test_load_reference_flattens_transparency_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((100, 120, 4), np.uint8)
    rgba[20:80, 20:100] = (255, 0, 0, 255)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = load_reference(path, 1000, 1000)
    assert out.shape == (100, 120, 3)
    assert tuple(out[5, 5]) == (255, 255, 255)
    assert tuple(out[50, 50]) == (255, 0, 0)


# ------------------------------------------------------------------------------------------ renderer


def test_render_frames_streams_with_little_memory(imgs: list[np.ndarray]) -> None:
    shots = parse_shots("[Image 1] push in. [Image 2] hold. [Image 3] pan left.", 3)
    frame_bytes = 1280 * 720 * 3
    tracemalloc.start()
    try:
        n = 0
        for frame in render_frames(shots, imgs, 1280, 720, 24, 120, seed=3, watermark=True):
            assert frame.shape == (720, 1280, 3) and frame.dtype == np.uint8
            n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 120
    assert peak < 16 * frame_bytes  # 120 frames would be 120 frame_bytes


@pytest.mark.parametrize("n", [0, 1, 2, 5, 13, 72, 100])
def test_exact_frame_count(imgs: list[np.ndarray], n: int) -> None:
    shots = parse_shots("[Image 1] a. [Image 2] b, push in. [Image 3] c, pan right. [Image 1] d.", 3)
    frames = render(shots, imgs, n=n)
    assert len(frames) == n
    assert all(f.shape == (180, 320, 3) and f.dtype == np.uint8 for f in frames)


def test_determinism_and_seed(imgs: list[np.ndarray]) -> None:
    prompt = "[Image 1] stands. [Image 2] close-up, push in."
    shots = parse_shots(prompt, 2)
    a = digest(render(shots, imgs, seed=11))
    b = digest(render(shots, imgs, seed=11))
    c = digest(render(shots, imgs, seed=12))
    assert a == b
    # The seed only nudges where the camera has room (zoomed shots); the plain wide hold is unaffected.
    assert a[:20] == c[:20]
    assert a[-20:] != c[-20:]


def test_holds_are_static_and_shared(imgs: list[np.ndarray]) -> None:
    frames = render([Shot(1, "", weight=1.0)], imgs, n=24)
    assert all(f is frames[0] for f in frames)
    assert not frames[0].flags.writeable  # a consumer cannot corrupt later frames


def test_every_move_produces_motion(imgs: list[np.ndarray]) -> None:
    for move in ("push_in", "pull_back", "pan_left", "pan_right", "tilt_up", "tilt_down"):
        frames = render([Shot(1, "", move=move, weight=1.0)], imgs, n=24)
        diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in itertools.pairwise(frames)]
        assert all(d > 0 for d in diffs), move
        assert len({id(f) for f in frames}) == 24, move  # fresh arrays, safe to hand to another thread


def shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """How far the content moved from ``a`` to ``b`` (x right, y down), by phase correlation."""
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
    return dx, dy


def test_move_directions(imgs: list[np.ndarray]) -> None:
    def first_last(move: str) -> tuple[np.ndarray, np.ndarray]:
        frames = render([Shot(1, "", move=move, weight=1.0)], imgs, w=320, h=240, n=24)
        return frames[0], frames[-1]

    # Panning the camera left moves the picture right, and so on.
    assert shift(*first_last("pan_left"))[0] > 3
    assert shift(*first_last("pan_right"))[0] < -3
    assert shift(*first_last("tilt_up"))[1] > 3
    assert shift(*first_last("tilt_down"))[1] < -3

    # Pushing in magnifies: the face (upper middle) gets bigger; pulling back does the opposite.
    def face_area(frame: np.ndarray) -> int:
        return int((np.abs(frame.astype(int) - (235, 200, 170)).max(axis=2) < 12).sum())

    a, b = first_last("push_in")
    assert face_area(b) > 1.3 * face_area(a) > 0
    c, d = first_last("pull_back")
    assert face_area(d) < face_area(c) / 1.3
    assert np.array_equal(a, d) and np.array_equal(b, c)  # the same two ends, in reverse


def test_framings_and_angles_change_the_picture(imgs: list[np.ndarray]) -> None:
    wide = render([Shot(1, "", weight=1.0)], imgs, n=1)[0]
    seen = {wide.tobytes()}
    for kwargs in (
        {"framing": "close_up"},
        {"framing": "medium"},
        {"angle": "low"},
        {"angle": "high"},
        {"angle": "side"},
    ):
        frame = render([Shot(1, "", weight=1.0, **kwargs)], imgs, n=1)[0]  # type: ignore[arg-type]
        assert frame.tobytes() not in seen, kwargs
        seen.add(frame.tobytes())


def test_contain_over_blurred_fill(imgs: list[np.ndarray]) -> None:
    # A portrait image in a 16:9 frame: whole image in the middle, blurred darker fill at the sides.
    frame = render([Shot(2, "", weight=1.0)], imgs, w=640, h=360, n=1)[0]
    src = cv2.resize(imgs[1], (270, 360), interpolation=cv2.INTER_AREA)
    middle = frame[:, 185:455]
    assert np.abs(middle.astype(int) - src.astype(int)).mean() < 12
    side = frame[:, :150].astype(np.float32)
    assert (
        cv2.Laplacian(side, cv2.CV_32F).var()
        < cv2.Laplacian(middle.astype(np.float32), cv2.CV_32F).var() / 20
    )
    assert side.mean() < src.mean()


def test_cross_fade_lies_between_the_shots(imgs: list[np.ndarray]) -> None:
    shots = [Shot(1, "", weight=0.5), Shot(2, "", weight=0.5)]
    frames = render(shots, imgs, n=72)
    a, b = frames[0], frames[-1]
    fades = [i for i, f in enumerate(frames) if f is not a and f is not b]
    assert 4 <= len(fades) <= 12
    assert fades == list(range(fades[0], fades[-1] + 1))  # one contiguous transition
    lo = np.minimum(a, b).astype(int) - 1
    hi = np.maximum(a, b).astype(int) + 1
    distance_to_a = []
    for i in fades:
        f = frames[i].astype(int)
        assert ((f >= lo) & (f <= hi)).all()
        distance_to_a.append(np.abs(f - a.astype(int)).mean())
    assert distance_to_a == sorted(distance_to_a)
    assert distance_to_a[0] > 0 and distance_to_a[-1] < np.abs(b.astype(int) - a.astype(int)).mean()


def test_no_fade_at_the_ends(imgs: list[np.ndarray]) -> None:
    frames = render([Shot(1, "", weight=0.5), Shot(2, "", weight=0.5)], imgs, n=72)
    assert frames[1] is frames[0] and frames[-2] is frames[-1]


def test_watermark_only_touches_its_box(imgs: list[np.ndarray]) -> None:
    shots = parse_shots("[Image 1] still. [Image 2] push in. [Image 3] pan left.", 3)
    w, h = 640, 360
    plain = render(shots, imgs, w=w, h=h, n=72, watermark=False)
    marked = render(shots, imgs, w=w, h=h, n=72, watermark=True)
    x0, y0, x1, y1 = watermark_box(w, h)
    assert x1 > x0 and y1 > y0
    assert x0 > w * 0.5 and y0 > h * 0.8 and x1 < w and y1 < h  # bottom right, inside a margin
    for p, m in zip(plain, marked, strict=True):
        diff = np.abs(p.astype(int) - m.astype(int)).sum(axis=2)
        outside = diff.copy()
        outside[y0:y1, x0:x1] = 0
        assert not outside.any()
        assert diff[y0:y1, x0:x1].any()
    assert all(not f.flags.writeable for f in plain[:2])


def test_many_shots_few_frames_degrades_gracefully(imgs: list[np.ndarray]) -> None:
    shots = [Shot(1 + i % 3, "", weight=1 / 9) for i in range(9)]
    assert len(render(shots, imgs, n=5)) == 5
    assert len(render(shots, imgs, n=30)) == 30


def test_render_frames_rejects_bad_input(imgs: list[np.ndarray]) -> None:
    with pytest.raises(ValueError):
        render_frames([Shot(4, "")], imgs, 320, 180, 24, 10, seed=0, watermark=False)
    with pytest.raises(ValueError):
        render_frames([], imgs, 320, 180, 24, 10, seed=0, watermark=False)
    with pytest.raises(ValueError):
        render_frames(
            [Shot(1, "", setups=(Shot(1, ""), Shot(2, "")))], imgs, 320, 180, 24, 10, seed=0, watermark=False
        )
    with pytest.raises(ValueError):
        list(
            render_frames(
                [Shot(1, "")], [np.zeros((10, 10), np.uint8)], 320, 180, 24, 10, seed=0, watermark=False
            )
        )


def test_extreme_aspect_and_tiny_images() -> None:
    tiny = [np.full((3, 2, 3), 200, np.uint8), pattern(4, 2000, 40)]
    shots = parse_shots("[Image 1] close-up, push in, low angle. [Image 2] wide, tilt up, side view.", 2)
    frames = render(shots, tiny, w=624, h=1472, n=48, watermark=True)
    assert len(frames) == 48 and all(f.shape == (1472, 624, 3) for f in frames)


def test_dissolves_are_where_the_renderer_blends(imgs: list[np.ndarray]) -> None:
    shots = parse_shots("[Image 1] a. [Image 2] b. [Image 3] c.", 3)
    frames = render(shots, imgs, n=120)
    fades = dissolves(shots, 120, 24)
    assert len(fades) == 2 and all(len(f) > 0 for f in fades)
    blended = {t for f in fades for t in f}
    for t in range(1, 119):
        is_new_picture = frames[t] is not frames[t - 1]
        # Holds repeat one array; a blend frame is a new array, and so is the first frame of the next hold.
        if t in blended:
            assert is_new_picture
        elif t - 1 not in blended:
            assert not is_new_picture, t
    for f in fades:
        # Each dissolve frame is the time-weighted mix of the frames just outside it (what a B-frame predicts).
        before, after = frames[f.start - 1].astype(float), frames[f.stop].astype(float)
        for t in f:
            w = (t - f.start + 1) / (len(f) + 1)
            assert np.abs(frames[t] - (before * (1 - w) + after * w)).max() <= 1.0


def test_two_set_ups_of_one_shot_are_two_pictures_joined_by_a_hard_cut(imgs: list[np.ndarray]) -> None:
    shots = parse_shots(
        "[Image 1] side view, medium shot, then switches to a low angle. [Image 2] wide shot.", 2
    )
    frames = render(shots, imgs, n=120)
    side, low, wide = schedule(shots, 120, 24)
    assert (side.shot.image_index, low.shot.image_index) == (1, 1) and (side.shot.angle, low.shot.angle) == (
        "side",
        "low",
    )
    # Both set-ups are holds: one picture each, and the frame after the last side-view frame is already the
    # low angle, with nothing blended in between.
    assert all(frames[t] is frames[0] for t in side.frames)
    (fade,) = dissolves(shots, 120, 24)
    assert fade.start > low.frames.start
    assert all(frames[t] is frames[low.frames.start] for t in range(low.frames.start, fade.start))
    assert not np.array_equal(frames[0], frames[low.frames.start])
    # The dissolve is still where the renderer blends, and the encoder's hints still match it.
    hints = picture_hints(shots, 120, 24)
    assert [i for i, h in enumerate(hints) if h is PictureHint.BLEND] == list(fade)
    assert [i for i, h in enumerate(hints) if h is PictureHint.ANCHOR] == [fade.start - 1, fade.stop]
    assert frames[fade.stop] is frames[wide.frames.stop - 1]


def test_picture_hints_mark_dissolves_and_their_anchors() -> None:
    shots = parse_shots("[Image 1] a. [Image 2] b.", 2)
    hints = picture_hints(shots, 120, 24)
    (fade,) = dissolves(shots, 120, 24)
    assert [i for i, h in enumerate(hints) if h is PictureHint.BLEND] == list(fade)
    assert [i for i, h in enumerate(hints) if h is PictureHint.ANCHOR] == [fade.start - 1, fade.stop]
    # Hard cuts (shots too short for a fade) get no hints: x264 finds the cut itself.
    assert set(picture_hints(parse_shots("[Image 1] a. [Image 2] b.", 2), 12, 24)) == {PictureHint.AUTO}


def test_engine_codes_the_dissolve_as_b_frames(tmp_path: Path) -> None:
    refs = write_refs(tmp_path, 2)
    out = tmp_path / "fade.mp4"
    req = request(refs, "[Image 1] a. [Image 2] b.")
    make_video(AnimaticEngine(), req, out, Progress())
    (fade,) = dissolves(parse_shots(req.prompt, 2), req.num_frames, req.fps)
    types = picture_types(out)
    assert types[fade.start : fade.stop] == "B" * len(fade), types


def test_warm_up_renders_and_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rendered: list[int] = []
    engine = AnimaticEngine()
    original = engine.frames

    def spy(request: GenerationRequest, on_progress):  # type: ignore[no-untyped-def]
        made = original(request, on_progress)
        assert len(dissolves(parse_shots(request.prompt, 2), request.num_frames, request.fps)) == 1

        def counted():  # type: ignore[no-untyped-def]
            for frame in made.frames:
                rendered.append(1)
                yield frame

        return Frames(counted(), made.hints, made.stage)

    engine.frames = spy  # type: ignore[method-assign]
    engine.warm_up()
    assert len(rendered) == 72
    assert list(tmp_path.iterdir()) == []
