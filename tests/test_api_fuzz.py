"""Random JSON thrown at submit gets a 4xx JSON error or a 200, never a 5xx."""

from __future__ import annotations

import json

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SUBMIT_PATH, LiveServer

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies that look like a submit, so the fuzzer gets deep into the checks instead of failing at "model".
media_items = st.fixed_dictionaries(
    {"type": st.sampled_from(["reference_image", "video"]) | scalars},
    optional={
        "url": st.sampled_from(["https://x.test/a.png", "data:image/png;base64,AAAA", "oss://b/k", "ftp://x"])
        | scalars
    },
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["happyhorse-1.0-r2v", "happyhorse-1.1-r2v", "other"]) | scalars,
        "input": st.fixed_dictionaries(
            {},
            optional={
                "prompt": st.text(max_size=40).map(lambda t: "[Image 1] " + t) | scalars,
                "media": st.lists(media_items, max_size=11) | json_values,
            },
        )
        | json_values,
        "parameters": st.fixed_dictionaries(
            {},
            optional={
                "resolution": st.sampled_from(["720P", "1080P", "4K"]) | scalars,
                "ratio": st.sampled_from(["16:9", "1:1", "9:21", "2:1"]) | scalars,
                "duration": st.integers(-5, 30) | scalars,
                "seed": st.integers(-10, 2**32) | scalars,
                "watermark": scalars,
            },
        )
        | json_values,
    },
)


def _check(live_server: LiveServer, payload: bytes) -> None:
    r = requests.post(
        live_server.base_url + SUBMIT_PATH,
        data=payload,
        headers={**live_server.headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text, payload[:300])
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    if r.status_code == 200:
        assert data["output"]["task_status"] == "PENDING"
    else:
        assert {"code", "message", "request_id"} <= set(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values | near_valid)
def test_random_json_never_5xx(live_server: LiveServer, value: object) -> None:
    _check(live_server, json.dumps(value).encode())


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_random_bytes_never_5xx(live_server: LiveServer, raw: bytes) -> None:
    _check(live_server, raw)
