"""videosynth.media.encode: exact frame counts, stream format, faststart, the producer/consumer pipeline."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from videosynth.media.encode import (
    ENCODER_CRF,
    ENCODER_MAX_BFRAMES,
    ENCODER_PRESET,
    PictureHint,
    VideoWriter,
    encode_frames,
)


def top_level_atoms(path: Path) -> list[str]:
    """Types of the top-level MP4 boxes, in file order."""
    data = path.read_bytes()
    atoms, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
        elif size == 0:
            size = len(data) - pos
        assert size >= 8, f"corrupt box at {pos}"
        atoms.append(kind.decode("latin-1"))
        pos += size
    assert pos == len(data)
    return atoms


def probe(path: Path) -> dict[str, object]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info: dict[str, object] = {
            "codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "pix_fmt": stream.codec_context.format.name,
            "rate": stream.average_rate,
        }
        frames = list(container.decode(stream))
        info["frames"] = len(frames)
        info["pts"] = [f.pts for f in frames]
        info["time_base"] = stream.time_base
        info["duration_s"] = float(stream.duration * stream.time_base) if stream.duration else None
    return info


def gradient(width: int, height: int, shift: int = 0) -> np.ndarray:
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    r = ((x + shift) * 255 // max(1, width - 1)).astype(np.uint8)
    g = (y * 255 // max(1, height - 1)).astype(np.uint8)
    b = ((x + y + 3 * shift) % 256).astype(np.uint8)
    return np.dstack(np.broadcast_arrays(r, g, b))


def no_producer_threads() -> bool:
    return not any(t.name == "videosynth-frame-producer" and t.is_alive() for t in threading.enumerate())


def test_defaults() -> None:
    assert ENCODER_PRESET == "veryfast"
    assert ENCODER_CRF == 23


def test_video_writer_format_and_faststart(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 320, 240, fps=24) as writer:
        for i in range(30):
            writer.write(gradient(320, 240, i))
    assert writer.frames_written == 30
    info = probe(path)
    assert info["codec"] == "h264"
    assert (info["width"], info["height"]) == (320, 240)
    assert info["pix_fmt"] == "yuv420p"
    assert info["rate"] == 24
    assert info["frames"] == 30
    assert info["time_base"] == Fraction(1, 24)
    assert sorted(info["pts"]) == list(range(30))  # type: ignore[arg-type]
    assert info["duration_s"] == pytest.approx(30 / 24)
    atoms = top_level_atoms(path)
    assert "moov" in atoms and "mdat" in atoms
    assert atoms.index("moov") < atoms.index("mdat")


def test_close_returns_count_and_is_idempotent(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "a.mp4", 64, 48)
    frame = gradient(64, 48)
    for _ in range(5):
        writer.write(frame)  # the same array: converted once, still 5 frames
    assert writer.close() == 5
    assert writer.close() == 5
    assert probe(tmp_path / "a.mp4")["frames"] == 5
    with pytest.raises(ValueError):
        writer.write(frame)


def test_colours_survive_the_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.mp4"
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[:, :32] = (200, 40, 40)
    frame[:, 32:64] = (40, 200, 40)
    frame[:, 64:] = (40, 40, 200)
    with VideoWriter(path, 96, 64) as writer:
        writer.write(frame)
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    # Compare the middle of each bar (chroma is subsampled, so edges bleed).
    for x in (16, 48, 80):
        assert np.abs(decoded[32, x].astype(int) - frame[32, x].astype(int)).max() <= 8


@pytest.mark.parametrize("size", [(321, 240), (320, 241), (0, 240)])
def test_rejects_odd_or_empty_sizes(tmp_path: Path, size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "x.mp4", *size)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((48, 64, 3), np.float32),
        np.zeros((48, 64), np.uint8),
        np.zeros((48, 66, 3), np.uint8),
        np.zeros((48, 64, 4), np.uint8),
    ],
)
def test_write_rejects_wrong_frames(tmp_path: Path, bad: np.ndarray) -> None:
    with VideoWriter(tmp_path / "x.mp4", 64, 48) as writer:
        with pytest.raises(ValueError, match=r"\(48, 64, 3\) uint8"):
            writer.write(bad)
        writer.write(gradient(64, 48))


def test_encode_frames_exact_count_and_callback_order(tmp_path: Path) -> None:
    path = tmp_path / "e.mp4"
    seen: list[int] = []
    n = encode_frames((gradient(128, 96, i) for i in range(37)), path, 128, 96, 24, on_frame=seen.append)
    assert n == 37
    assert seen == list(range(37))
    info = probe(path)
    assert info["frames"] == 37
    assert info["duration_s"] == pytest.approx(37 / 24)
    assert no_producer_threads()


def test_encode_frames_reuses_a_repeated_array(tmp_path: Path) -> None:
    still = gradient(128, 96)
    path = tmp_path / "s.mp4"
    assert encode_frames([still] * 20 + [gradient(128, 96, 9)] * 4, path, 128, 96) == 24
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 24
    assert all(np.array_equal(decoded[0], d) for d in decoded[1:20])


def test_encode_frames_is_bounded(tmp_path: Path) -> None:
    """The producer never runs more than the queue (plus the frames in hand) ahead of the encoder."""
    produced = 0
    lead: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        nonlocal produced
        for i in range(60):
            produced += 1
            yield gradient(64, 48, i)

    def on_frame(i: int) -> None:
        lead.append(produced - (i + 1))

    encode_frames(frames(), tmp_path / "b.mp4", 64, 48, on_frame=on_frame, queue_size=4)
    assert max(lead) <= 4 + 2


class Boom(Exception):
    pass


def test_producer_exception_propagates_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "p.mp4"

    def frames() -> Iterator[np.ndarray]:
        for i in range(10):
            yield gradient(64, 48, i)
        raise Boom("render failed")

    with pytest.raises(Boom, match="render failed"):
        encode_frames(frames(), path, 64, 48)
    assert no_producer_threads()
    path.unlink(missing_ok=True)  # closed (PyAV creates the file only once a packet is muxed)


def test_callback_exception_stops_the_producer(tmp_path: Path) -> None:
    path = tmp_path / "c.mp4"
    produced = 0
    finalised = threading.Event()

    def frames() -> Iterator[np.ndarray]:
        nonlocal produced
        try:
            for i in range(10_000):
                produced += 1
                yield gradient(64, 48, i)
        finally:
            finalised.set()

    def on_frame(i: int) -> None:
        if i == 5:
            raise Boom("canceled")

    with pytest.raises(Boom, match="canceled"):
        encode_frames(frames(), path, 64, 48, on_frame=on_frame, queue_size=3)
    assert no_producer_threads()
    assert finalised.is_set()  # the generator was closed, not abandoned
    assert produced <= 6 + 3 + 2
    path.unlink(missing_ok=True)


def test_wrong_frame_from_producer_propagates(tmp_path: Path) -> None:
    frames = [gradient(64, 48), np.zeros((10, 10, 3), np.uint8), gradient(64, 48)]
    with pytest.raises(ValueError):
        encode_frames(frames, tmp_path / "w.mp4", 64, 48)
    assert no_producer_threads()


def test_empty_iterable_writes_no_frames(tmp_path: Path) -> None:
    assert encode_frames([], tmp_path / "z.mp4", 64, 48) == 0
    assert no_producer_threads()


def picture_types(path: Path) -> str:
    """One letter per frame in display order: I, P or B."""
    with av.open(str(path)) as container:
        return "".join(PictureType(f.pict_type).name for f in container.decode(video=0))


def dissolve(a: np.ndarray, b: np.ndarray, steps: int) -> list[np.ndarray]:
    return [
        (a * (1 - k / (steps + 1)) + b * (k / (steps + 1))).round().astype(np.uint8)
        for k in range(1, steps + 1)
    ]


def test_hints_code_a_dissolve_as_b_frames_between_p_anchors(tmp_path: Path) -> None:
    a, b = gradient(128, 96), gradient(128, 96, 60)
    # 30 frames of hold first: left to itself, x264 then puts an I-frame inside the dissolve.
    frames = [a] * 30 + dissolve(a, b, 6) + [b] * 10
    hints = [PictureHint.AUTO] * 29 + [PictureHint.ANCHOR] + [PictureHint.BLEND] * 6 + [PictureHint.ANCHOR]
    path = tmp_path / "d.mp4"
    assert encode_frames(frames, path, 128, 96, hints=hints) == 46
    types = picture_types(path)
    assert types[29] == "P" and types[36] == "P", types
    assert types[30:36] == "BBBBBB", types
    # Without hints x264 picks by itself, and the pictures are the same either way.
    plain = tmp_path / "plain.mp4"
    encode_frames(frames, plain, 128, 96)
    with av.open(str(path)) as hinted, av.open(str(plain)) as auto:
        for x, y in zip(hinted.decode(video=0), auto.decode(video=0), strict=True):
            diff = np.abs(x.to_ndarray(format="rgb24").astype(int) - y.to_ndarray(format="rgb24").astype(int))
            assert diff.mean() < 3


def test_a_blend_run_longer_than_the_b_frame_limit_is_still_encoded(tmp_path: Path) -> None:
    a, b = gradient(64, 48), gradient(64, 48, 40)
    n = ENCODER_MAX_BFRAMES + 5
    frames = [a] * 3 + dissolve(a, b, n) + [b] * 3
    hints = (
        [PictureHint.AUTO, PictureHint.AUTO, PictureHint.ANCHOR]
        + [PictureHint.BLEND] * n
        + [PictureHint.ANCHOR]
    )
    path = tmp_path / "long.mp4"
    assert encode_frames(frames, path, 64, 48, hints=hints) == len(frames)
    types = picture_types(path)
    assert len(types) == len(frames)
    assert "B" * (ENCODER_MAX_BFRAMES + 1) not in types, types
