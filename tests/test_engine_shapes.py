"""The two engine shapes behind the seam: a frame engine's frames are encoded and counted by the worker, a file
engine's MP4 is checked; both end to end through a real server, worker and engine process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import ImageServer, LiveServer, write_image
from fake_engines import SolidColorEngine
from test_encode import top_level_atoms
from test_end_to_end import probe, r2v_body
from videosynth.catalog import Catalog
from videosynth.engines.base import Audio, Frames, GenerationRequest, ProgressCallback
from videosynth.engines.registry import create_engine
from videosynth.errors import EngineError, EngineOutputInvalid
from videosynth.worker.video import make_video

MODELS = """
[models."frames-r2v"]
engine = "fake_engines:SolidColorEngine"
color = "#2050e0"

[models."one-frame-too-many-r2v"]
engine = "fake_engines:OddFrameEngine"
extra_frames = 1

[models."one-frame-short-r2v"]
engine = "fake_engines:OddFrameEngine"
extra_frames = -1

[models."relay-r2v"]
engine = "fake_engines:RelayEngine"

[models."relay-30fps-r2v"]
engine = "fake_engines:RelayEngine"
frame_rate = 30

[models."relay-mkv-r2v"]
engine = "fake_engines:RelayEngine"
container = "matroska"
"""


@pytest.fixture
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path = tmp_path_factory.mktemp("models") / "models.toml"
    path.write_text(MODELS, encoding="utf-8")
    return Catalog.from_file(path)


@pytest.fixture
def url(image_server: ImageServer) -> str:
    write_image(image_server.root / "ref.png", 500, 400)
    return image_server.url("ref.png")


def _run(server: LiveServer, url: str, model: str) -> dict:
    r = server.submit(r2v_body([url], duration=3, resolution="480P", ratio="4:3") | {"model": model})
    assert r.status_code == 200, r.text
    return dict(server.wait(r.json()["output"]["task_id"]))


def test_a_frame_engine_gets_the_workers_h264_faststart_mp4(
    live_server: LiveServer, url: str, worker, tmp_path: Path
) -> None:
    body = _run(live_server, url, "frames-r2v")
    out = body["output"]
    assert out["task_status"] == "SUCCEEDED", body
    video = tmp_path / "v.mp4"
    video.write_bytes(requests.get(out["video_url"], timeout=30).content)
    info = probe(video.read_bytes())
    assert (info["codec"], info["pix_fmt"], info["frames"], info["fps"]) == ("h264", "yuv420p", 72, 24)
    atoms = top_level_atoms(video)
    assert atoms.index("moov") < atoms.index("mdat")
    assert body["usage"]["output_video_duration"] == 3


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("one-frame-too-many-r2v", "The engine made more than 72 frames; the video needs 72."),
        ("one-frame-short-r2v", "The engine made 71 frames; the video needs 72."),
    ],
)
def test_a_frame_engine_with_the_wrong_frame_count_fails_its_task(
    live_server: LiveServer, url: str, worker, model: str, message: str
) -> None:
    out = _run(live_server, url, model)["output"]
    assert (out["task_status"], out["code"], out["message"]) == ("FAILED", "InternalError.Algo", message)
    assert live_server.store.get(out["task_id"]).error_kind == "engine_output"  # type: ignore[union-attr]
    assert _run(live_server, url, "frames-r2v")["output"]["task_status"] == "SUCCEEDED"


@pytest.mark.parametrize(("model", "seconds"), [("relay-r2v", 3), ("relay-30fps-r2v", 3)])
def test_a_file_engine_hands_back_its_own_mp4(
    live_server: LiveServer, url: str, worker, model: str, seconds: int
) -> None:
    body = _run(live_server, url, model)
    out = body["output"]
    assert out["task_status"] == "SUCCEEDED", body
    info = probe(requests.get(out["video_url"], timeout=30).content)
    assert info["codec"] == "mpeg4"  # the engine's own file, not re-encoded
    assert body["usage"]["output_video_duration"] == seconds


def test_a_file_engine_that_writes_no_mp4_fails_its_task(live_server: LiveServer, url: str, worker) -> None:
    out = _run(live_server, url, "relay-mkv-r2v")["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InternalError.Algo"), out
    assert out["message"] == "The engine's video is matroska,webm, not MP4."


# ---------------------------------------------------------------- the engine process's part, without a server


def _request(duration: int = 1) -> GenerationRequest:
    return GenerationRequest("[Image 1]", (), "480P", "4:3", 64, 48, duration, 24, 0, False)


class _Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str | None]] = []

    def __call__(self, done: int, total: int, stage: str | None = None) -> None:
        self.calls.append((done, total, stage))


class _WrongSizeEngine:
    name = "wrong-size"

    def warm_up(self) -> None:
        pass

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        def frames() -> Iterator[np.ndarray]:
            yield np.zeros((request.height, request.width, 3), np.uint8)
            yield np.zeros((request.height, request.width + 2, 3), np.uint8)

        return Frames(frames())


def test_a_frame_of_the_wrong_size_is_the_engines_fault_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(
        EngineOutputInvalid, match=r"Frame 1 is \(48, 66, 3\) uint8; the video needs \(48, 64, 3\)"
    ):
        make_video(_WrongSizeEngine(), _request(), out, _Reports())
    assert not out.exists()


def test_frame_progress_is_reported_per_frame_with_the_engines_stage(tmp_path: Path) -> None:
    engine = SolidColorEngine(color="#000000", frames_per_report=100, api_key="")
    reports = _Reports()
    result = make_video(engine, _request(), tmp_path / "out.mp4", reports)
    assert (result.frames, result.duration) == (24, 1.0)
    encoded = [done for done, total, stage in reports.calls if stage == "painting" and total == 24]
    assert encoded[-24:] == list(range(1, 25))


def test_an_engine_of_neither_shape_is_refused_when_built() -> None:
    with pytest.raises(EngineError, match="neither a frame engine"):
        create_engine("fake_engines:ShapelessEngine")


class _ToneEngine:
    """Frames with a soundtrack: a 440 Hz tone left, 660 Hz right, ``seconds`` long (not the video's)."""

    name = "tone"

    def __init__(self, seconds: float, rate: int = 32000, channels: int = 2, bad: bool = False) -> None:
        self.seconds, self.rate, self.channels, self.bad = seconds, rate, channels, bad

    def warm_up(self) -> None:
        pass

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        t = np.arange(int(self.seconds * self.rate)) / self.rate
        tones = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])[: self.channels]
        samples = (0.5 * tones).astype(np.float32)
        if self.bad:
            samples[0, 10] = np.nan
        picture = np.zeros((request.height, request.width, 3), np.uint8)
        return Frames(iter([picture] * request.num_frames), audio=Audio(samples, self.rate))


def _streams(path: Path) -> tuple[float, float, int, int, np.ndarray]:
    import av

    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        v_seconds = float(video.duration * video.time_base)
        a_seconds = float(audio.duration * audio.time_base)
        channels, rate = audio.codec_context.channels, audio.rate
        decoded = np.concatenate([frame.to_ndarray() for frame in container.decode(audio)], axis=1)
    return v_seconds, a_seconds, channels, rate, decoded


@pytest.mark.parametrize("seconds", [0.6, 1.0, 1.7])
def test_a_soundtrack_is_cut_or_padded_to_the_video_and_muxed_as_aac(tmp_path: Path, seconds: float) -> None:
    out = tmp_path / "out.mp4"
    result = make_video(_ToneEngine(seconds), _request(), out, _Reports())
    assert (result.frames, result.duration) == (24, 1.0)
    v_seconds, a_seconds, channels, rate, decoded = _streams(out)
    assert v_seconds == 1.0 and abs(a_seconds - v_seconds) <= 1 / 24
    assert (channels, rate) == (2, 32000)
    # The tones come back in their channels (AAC is lossy: compare where the energy is, not samples).
    start = 2048  # past the encoder's priming
    for channel, hz in ((0, 440), (1, 660)):
        spectrum = np.abs(np.fft.rfft(decoded[channel, start : start + 8192]))
        assert abs(np.argmax(spectrum) * 32000 / 8192 - hz) < 8
    if seconds < 1.0:  # padded with silence after the tone
        assert np.abs(decoded[:, int(0.8 * 32000) : int(0.95 * 32000)]).max() < 0.02


def test_a_mono_soundtrack_stays_mono(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    make_video(_ToneEngine(1.0, rate=16000, channels=1), _request(), out, _Reports())
    _v, a_seconds, channels, rate, _decoded = _streams(out)
    assert (channels, rate) == (1, 16000) and abs(a_seconds - 1.0) <= 1 / 24


def test_a_soundtrack_that_is_not_finite_is_the_engines_fault(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(EngineOutputInvalid, match="not finite"):
        make_video(_ToneEngine(1.0, bad=True), _request(), out, _Reports())
    assert not out.exists()


def test_engines_without_sound_write_no_audio_stream(tmp_path: Path) -> None:
    import av

    out = tmp_path / "out.mp4"
    make_video(
        SolidColorEngine(color="#000000", frames_per_report=100, api_key=""), _request(), out, _Reports()
    )
    with av.open(str(out)) as container:
        assert not container.streams.audio and len(container.streams.video) == 1
