"""The models file: per-model engine, limits and engine options, checked at start, served end to end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import requests

from conftest import ImageServer, LiveServer, write_image
from test_end_to_end import r2v_body
from videosynth.catalog import Catalog, ModelsFileError
from videosynth.engines.animatic.render import render_frames, watermark_box
from videosynth.engines.animatic.shots import Shot
from videosynth.settings import Settings
from videosynth.wiring import build_catalog

TESTS = Path(__file__).resolve().parent
VIDEOSYNTH = str(Path(sys.executable).parent / "videosynth")
TWO_ENGINES = """
[models."happyhorse-1.1-r2v"]
engine = "animatic"
watermark_text = "STUDIO A"
resolutions = ["480P", "720P"]
durations = [3, 6]

[models."happyhorse-1.0-r2v"]
engine = "fake_engines:SolidColorEngine"
color = "#d02030"
api_key = "sk-upstream-secret"
references = [1, 2]
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_example_is_valid() -> None:
    catalog = Catalog.from_file(TESTS.parent / "examples" / "models.toml")
    preview = catalog.get("storyboard-preview")
    assert preview.engine == "animatic" and preview.options == {"watermark_text": "PREVIEW"}
    assert (preview.resolutions, preview.max_duration, preview.default_resolution) == (
        ("480P", "720P"),
        8,
        "480P",
    )


def test_a_file_gives_each_model_its_engine_limits_and_options(tmp_path: Path) -> None:
    catalog = Catalog.from_file(_file(tmp_path, TWO_ENGINES))
    a, b = catalog.get("happyhorse-1.1-r2v"), catalog.get("happyhorse-1.0-r2v")
    assert (a.engine, a.options) == ("animatic", {"watermark_text": "STUDIO A"})
    assert (a.resolutions, a.min_duration, a.max_duration, a.default_resolution) == (
        ("480P", "720P"),
        3,
        6,
        "720P",
    )
    assert b.engine == "fake_engines:SolidColorEngine"
    assert b.options == {"color": "#d02030", "frames_per_report": 24, "api_key": "sk-upstream-secret"}
    assert b.describe()["options"]["api_key"] == "***"
    assert "sk-upstream-secret" not in json.dumps([m.describe() for m in catalog])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[models."m"]\nengine = "animatic"\nwatermark_txt = "x"',
            "unknown key 'watermark_txt' for engine 'animatic'",
        ),
        ('[models."m"]\nengine = "animatic"\nwatermark_text = 3', "watermark_text must be a string"),
        ('[models."m"]\nresolutions = ["720P"]', 'needs engine = "..."'),
        ('[models."m"]\nengine = "wan-vac"', "unknown engine 'wan-vac'"),
        ('[models."m"]\nengine = "nowhere:Engine"', "cannot be imported"),
        (
            '[models."m"]\nengine = "animatic"\ndurations = [2, 9]',
            "durations must be [min, max] with 3 <= min",
        ),
        ('[models."m"]\nengine = "animatic"\nresolutions = ["4K"]', "resolutions must be a non-empty list"),
        (
            '[models."m"]\nengine = "animatic"\nresolutions = ["720P"]\ndefault_resolution = "1080P"',
            "default_resolution",
        ),
        ('[models."m"]\nengine = "fake_engines:SolidColorEngine"\nframes_per_report = 0', "at least 1"),
        ('[model."m"]\nengine = "animatic"', "unknown top-level key 'model'"),
        ("", "no models"),
        ('[models."m"\nengine = ', "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_clear_error_naming_file_model_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ModelsFileError) as info:
        Catalog.from_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message, message
    assert "\n" not in message
    if "[models." in text and "TOML" not in expected:
        assert 'models."m"' in message


def test_routes_and_a_file_together_are_refused(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {"VIDEOSYNTH_MODELS_FILE": str(_file(tmp_path, TWO_ENGINES)), "VIDEOSYNTH_MODELS": "x=animatic"}
    )
    with pytest.raises(ModelsFileError, match="cannot be combined"):
        build_catalog(settings)


@pytest.mark.parametrize("command", ["serve", "worker", "models"])
def test_a_bad_file_stops_the_command_with_one_line(tmp_path: Path, command: str) -> None:
    path = _file(tmp_path, '[models."happyhorse-1.1-r2v"]\nengine = "animatic"\nsteps = 30\n')
    env = {**os.environ, "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    out = subprocess.run(
        [VIDEOSYNTH, command, "--models-file", str(path)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(path) in lines[0] and "unknown key 'steps'" in lines[0] and "happyhorse-1.1-r2v" in lines[0]
    assert not (tmp_path / "db.sqlite").exists()  # stopped before anything started


def test_the_models_command_shows_the_effective_table_without_secrets(tmp_path: Path) -> None:
    path = _file(tmp_path, TWO_ENGINES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    run = [VIDEOSYNTH, "models", "--models-file", str(path)]
    text = subprocess.run(run, capture_output=True, text=True, timeout=60, env=env, check=True).stdout
    assert "happyhorse-1.1-r2v: engine animatic" in text and "watermark_text='STUDIO A'" in text
    assert "sk-upstream-secret" not in text and "api_key='***'" in text
    table = json.loads(
        subprocess.run([*run, "--json"], capture_output=True, text=True, env=env, check=True).stdout
    )
    assert {m["model"]: m["engine"] for m in table["data"]} == {
        "happyhorse-1.1-r2v": "animatic",
        "happyhorse-1.0-r2v": "fake_engines:SolidColorEngine",
    }


def test_the_animatic_draws_the_watermark_its_options_name() -> None:
    image = np.full((400, 600, 3), 90, np.uint8)

    def last_frame(text: str | None) -> np.ndarray:
        kw = {} if text is None else {"watermark_text": text}
        return list(render_frames([Shot(1, "")], [image], 320, 180, 24, 2, seed=0, watermark=True, **kw))[-1]

    x0, y0, x1, y1 = watermark_box(320, 180, "STUDIO A")
    assert not np.array_equal(last_frame("STUDIO A")[y0:y1, x0:x1], last_frame(None)[y0:y1, x0:x1])


@pytest.fixture
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return Catalog.from_file(_file(tmp_path_factory.mktemp("models"), TWO_ENGINES))


def test_two_models_on_two_engines_each_with_its_options_end_to_end(
    live_server: LiveServer, image_server: ImageServer, worker
) -> None:
    write_image(image_server.root / "ref.png", 600, 450)
    url = image_server.url("ref.png")
    listed = {m["model"]: m for m in requests.get(f"{live_server.api}/models", timeout=10).json()["data"]}
    assert listed["happyhorse-1.1-r2v"]["options"] == {"watermark_text": "STUDIO A"}
    assert listed["happyhorse-1.0-r2v"]["options"]["api_key"] == "***"
    # The file's limits are the API's: 1080P is not offered for 1.1 here, 3 references not for 1.0.
    assert (
        live_server.submit(
            r2v_body([url], duration=3, resolution="1080P") | {"model": "happyhorse-1.1-r2v"}
        ).status_code
        == 400
    )
    assert live_server.submit(r2v_body([url] * 3, duration=3)).status_code == 400
    solid = live_server.submit(r2v_body([url], duration=3, resolution="480P")).json()["output"]["task_id"]
    animatic = live_server.submit(
        r2v_body([url], duration=3, resolution="480P") | {"model": "happyhorse-1.1-r2v"}
    ).json()["output"]["task_id"]
    frames = {}
    for task_id in (solid, animatic):
        out = live_server.wait(task_id)["output"]
        assert out["task_status"] == "SUCCEEDED", out
        with av.open(io.BytesIO(requests.get(out["video_url"], timeout=30).content)) as container:
            frames[task_id] = next(container.decode(video=0)).to_ndarray(format="rgb24")
    colour = frames[solid].reshape(-1, 3).mean(axis=0)
    assert np.allclose(colour, (0xD0, 0x20, 0x30), atol=6), colour  # the fake engine, with its colour option
    assert frames[animatic].std() > 5  # the animatic: the reference image, not a flat colour
