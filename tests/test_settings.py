"""Settings come from an environ mapping (read only at the CLI edge) and fail fast on bad values."""

from __future__ import annotations

import pytest

from videosynth.catalog import Catalog
from videosynth.errors import ModelNotFound
from videosynth.settings import Settings, parse_duration


def test_defaults() -> None:
    s = Settings.from_environ({})
    assert s.workers == 1 and s.media_allow_private is False and s.timezone == "UTC"
    assert s.database_url.startswith("sqlite:///") and s.storage_url.startswith("file://")
    assert (s.task_timeout_seconds, s.retention_seconds, s.max_running_per_account) == (10800, 86400, 5)


def test_environment_and_overrides() -> None:
    s = Settings.from_environ(
        {
            "VIDEOSYNTH_API_KEYS": " sk-a , sk-b,,",
            "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "true",
            "VIDEOSYNTH_WORKERS": "0",
            "VIDEOSYNTH_TASK_TIMEOUT": "90m",
            "VIDEOSYNTH_RETENTION": "1d",
            "VIDEOSYNTH_PUBLIC_URL": "https://video.example.com/",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        },
        workers="3",
    )
    assert s.api_keys == ("sk-a", "sk-b")
    assert s.media_allow_private is True and s.workers == 3
    assert s.task_timeout_seconds == 5400 and s.retention_seconds == 86400 and s.url_ttl_seconds == 86400
    assert s.public_url == "https://video.example.com"
    assert (s.s3_region, s.s3_endpoint_url) == ("eu-central-1", "http://127.0.0.1:9000")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VIDEOSYNTH_WORKERS": "-1"}, ">= 0"),
        ({"VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "maybe"}, "boolean"),
        ({"VIDEOSYNTH_TIMEZONE": "Nowhere/Town"}, "time zone"),
        ({"VIDEOSYNTH_TASK_TIMEOUT": "soon"}, "duration"),
        ({"VIDEOSYNTH_LEASE_SECONDS": "0"}, "positive"),
        ({"VIDEOSYNTH_MAX_RUNNING_PER_ACCOUNT": "0"}, ">= 1"),
    ],
)
def test_bad_values_fail_fast(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_environ(env)


def test_parse_duration() -> None:
    assert [parse_duration(v) for v in ("90", "90s", "15m", "3h", "1d", 2.5)] == [
        90,
        90,
        900,
        10800,
        86400,
        2.5,
    ]


def test_model_routes() -> None:
    catalog = Catalog.default("animatic", "happyhorse-1.1-r2v=wan-vace, preview-r2v=animatic")
    assert catalog.get("happyhorse-1.1-r2v").engine == "wan-vace"
    assert catalog.get("happyhorse-1.0-r2v").engine == "animatic"
    assert catalog.get("preview-r2v").engine == "animatic"
    with pytest.raises(ModelNotFound):
        catalog.get("nope")
    with pytest.raises(ValueError, match="model=engine"):
        Catalog.default("animatic", "broken")
