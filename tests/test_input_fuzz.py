"""Hostile input, fuzzed: the prompt parsers, the query parameters, and the upload form.

``test_api_fuzz.py`` throws JSON at submit; this file covers the rest of what a client controls:

* the prompt, as the API checks it (``[Image N]`` within the images sent) and as the animatic cuts it into
  shots (a shot list that covers the video, for any text at all);
* query strings and path text of the task list, a task's query and cancel, and the ``/files`` links;
* the policy request and the multipart upload form, including what reaches storage.

Everything over HTTP goes to a real server on loopback with a real store and storage (``live_server``).
The properties: never a 5xx; every 4xx of an API route is a JSON ``{code, message, request_id}``; a refused
upload stores nothing; a valid policy and key still upload, byte for byte.
"""

from __future__ import annotations

import http.client
import json
import string
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import LiveServer
from videosynth import sizes, uploads
from videosynth.api.dashscope.errors import ERRORS
from videosynth.api.dashscope.requests import IMAGE_REFERENCE, parse_submit, truncate_prompt
from videosynth.api.services import UPLOAD_SECRET
from videosynth.catalog import Catalog
from videosynth.engines.animatic.render import MIN_SHOT_SECONDS, dissolves
from videosynth.engines.animatic.shots import ANGLES, FRAMINGS, MOVES, allocate_frames, parse_shots
from videosynth.errors import RequestError
from videosynth.storage.local import PARTIAL_DIR, LocalStorage

CATALOG = Catalog.default("animatic")
MODEL = CATALOG.get("happyhorse-1.1-r2v")
HTTP = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- hostile text ---------------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=40)
lone_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
controls = st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Zs"]), min_size=1, max_size=8)
chinese = st.text(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
    | st.sampled_from(
        list("。！？；…，、特写近景中景全景远景推近推镜拉远拉出左摇右摇摇镜头仰拍俯视侧面信仰")
    ),
    max_size=30,
)
bracket_soup = st.text(st.sampled_from(list("[]【】［］()<>{}\\\"' \t\n.!?;")), min_size=1, max_size=30)
camera_words = st.sampled_from(
    [
        "close-up",
        "Close up of ",
        "medium shot",
        "wide angle",
        "push in",
        "zooming in",
        "pulls back",
        "pan",
        "the pan",
        "panning left",
        "pan right",
        "tilt up",
        "tilts down",
        "low angle",
        "bird's-eye",
        "side view",
        "profile",
        ". ",
        "。",
        "\n",
    ]
)
numbers = (
    st.integers(0, 12).map(str)
    | st.integers(0, 10**12).map(str)
    | st.text(st.sampled_from("0123456789"), min_size=1, max_size=30)
    | st.integers(7, 6000).map(lambda n: "9" * n)  # int() refuses more than 4300 digits
    | st.sampled_from(["00001", "0000001", "²", "١", "２", "𝟏", "٣", "-1", "1.5", "1e3", " 1 "])
)
references = st.builds(
    lambda opener, word, gap, number, closer: f"{opener}{word}{gap}{number}{gap}{closer}",
    st.sampled_from(["[", "【", "［", "[ ", "(", ""]),
    st.sampled_from(
        ["Image", "image", "IMAGE", "Img", "图", "图片", "图像", "ｉｍａｇｅ", "character", "imagen"]
    ),
    st.sampled_from(["", " ", "  ", "\t", "\u3000"]),
    numbers,
    st.sampled_from(["]", "】", "］", " ]", ")", ""]),
)
prompts = st.lists(
    st.one_of(
        any_text, references, references, chinese, controls, bracket_soup, camera_words, lone_surrogates
    ),
    max_size=25,
).map("".join)


def _has_surrogate(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cs" for ch in text)


# --- 1. the prompt parsers (pure) -----------------------------------------------------------------------


@PURE
@given(prompt=prompts, n=st.integers(1, MODEL.max_references))
def test_submit_prompt_references_stay_within_the_images(prompt: str, n: int) -> None:
    media = [{"type": "reference_image", "url": f"https://img.test/{i}.png"} for i in range(n)]
    body = {"model": MODEL.name, "input": {"prompt": prompt, "media": media}}
    try:
        parsed = parse_submit(body, CATALOG, resolve_oss=False)
    except RequestError as exc:
        # The documented synchronous refusal: a 4xx on the wire, and only for one of these reasons.
        assert 400 <= ERRORS[exc.kind].status < 500
        assert not prompt.strip() or _has_surrogate(prompt) or "[Image " in str(exc), (exc, prompt)
        return
    assert not _has_surrogate(prompt)
    assert parsed.prompt == truncate_prompt(prompt) and prompt.startswith(parsed.prompt)
    assert parsed.media_urls == tuple(m["url"] for m in media)
    for match in IMAGE_REFERENCE.finditer(parsed.prompt):
        digits = match.group(1)
        assert len(digits) <= 6 and 1 <= int(digits) <= n, (match.group(0), n)


@PURE
@given(
    prompt=prompts,
    n=st.integers(1, MODEL.max_references),
    duration=st.integers(MODEL.min_duration, MODEL.max_duration),
)
def test_shot_parser_covers_the_duration(prompt: str, n: int, duration: int) -> None:
    shots = parse_shots(prompt, n)
    assert shots
    assert {s.image_index for s in shots} == set(range(1, n + 1))
    assert all(1 <= s.image_index <= n for s in shots)
    assert all(s.text in prompt for s in shots)  # a shot's text is a piece of the prompt, never invented
    assert all(
        s.framing in (None, *FRAMINGS) and s.move in MOVES and s.angle in (None, *ANGLES) for s in shots
    )
    assert all(0 < s.weight <= 1 for s in shots)
    assert sum(s.weight for s in shots) == pytest.approx(1.0)

    total = duration * sizes.FPS
    counts = allocate_frames(shots, total, min_frames=max(1, round(sizes.FPS * MIN_SHOT_SECONDS)))
    assert len(counts) == len(shots) and all(c >= 0 for c in counts)
    assert sum(counts) == total  # every frame of the video belongs to exactly one shot
    for fade in dissolves(shots, total, sizes.FPS):
        assert 0 < fade.start < fade.stop < total


# --- HTTP helpers ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.body)
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


class Raw:
    """One keep-alive loopback connection sending request targets exactly as given (already ASCII-encoded)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        assert parts.hostname == "127.0.0.1"
        self._host, self._port = parts.hostname, parts.port
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, target: str, body: bytes | None = None, headers: dict | None = None
    ) -> Answer:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=30)
            try:
                self._conn.request(method, target, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed a keep-alive connection (e.g. after refusing a body it did not read).
                self.close()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self.close()  # a half-sent request must not poison the next one
                raise
            if response.will_close:
                self.close()
            return Answer(response.status, response.headers, data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@pytest.fixture
def raw(live_server: LiveServer) -> Iterator[Raw]:
    client = Raw(live_server.base_url)
    yield client
    client.close()


def assert_api_answer(answer: Answer) -> dict:
    """Never a 5xx; a JSON body; every 4xx carries code, message and request_id."""
    assert answer.status < 500, (answer.status, answer.body[:300])
    if 300 <= answer.status < 400:  # Starlette's trailing-slash redirect
        assert answer.headers.get("location"), answer.headers
        return {}
    data = answer.json()
    if answer.status >= 400:
        assert {"code", "message", "request_id"} <= set(data), data
        assert all(isinstance(data[k], str) and data[k] for k in ("code", "message", "request_id")), data
        assert answer.headers.get("x-request-id") == data["request_id"]
    return data


def auth(live_server: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {live_server.key}"}


# Query text: any Unicode, percent-encoded (lone surrogates as the bytes they would be: invalid UTF-8), and
# raw ASCII junk that is legal in a request target but not valid percent-encoding.
junk = st.text(st.sampled_from(list("%&=+;?/#abcfzZ09~-._!$'()*,:@[]")), max_size=12) | st.sampled_from(
    ["%", "%f", "%zz", "%ff%fe", "%c3%28", "%00", "%e2%82", "%ed%a0%80", "%2F", "%2e%2e", "%25"]
)


def encoded(text: str, safe: str = "") -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe=safe)


query_text = any_text.map(encoded) | junk | st.builds(lambda a, b: a + b, any_text.map(encoded), junk)


# --- 2. query parameters ---------------------------------------------------------------------------------

LIST_NAMES = [
    "page_no",
    "page_size",
    "status",
    "model_name",
    "task_id",
    "api_key_id",
    "start_time",
    "end_time",
]
list_values = st.one_of(
    st.integers(-(10**12), 10**20).map(str),
    st.sampled_from(["", "0", "1", "100", "101", "999999999", "1000000000", "²", "١٢", "1e3", " 5", "0x10"]),
    st.sampled_from(
        ["PENDING", "running", "Succeeded", "FAILED", "CANCELED", "UNKNOWN", "unknown", "PENDING "]
    ),
    st.sampled_from(["happyhorse-1.1-r2v", "happyhorse-1.0-r2v", "x" * 5000]),
    # times: YYYYMMDDhhmmss, near and far from valid
    st.builds(
        lambda y, mo, d, h, mi, s: f"{y:04d}{mo:02d}{d:02d}{h:02d}{mi:02d}{s:02d}",
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
    ),
    st.sampled_from(
        ["00010101000000", "99991231235959", "２０２４０１０１００００００", "2024-01-01 00:00:00"]
    ),
    any_text,
)
list_pairs = st.lists(
    st.tuples(st.sampled_from(LIST_NAMES) | any_text, list_values),
    max_size=8,
)


@HTTP
@given(pairs=list_pairs, tail=st.lists(junk, max_size=3), slash=st.booleans())
def test_task_list_query_never_5xx(
    live_server: LiveServer, raw: Raw, pairs: list, tail: list, slash: bool
) -> None:
    query = "&".join(f"{encoded(k)}={encoded(v)}" for k, v in pairs)
    query = "&".join(filter(None, [query, *tail]))
    answer = raw.request("GET", f"/api/v1/tasks{'/' if slash else ''}?{query}", headers=auth(live_server))
    data = assert_api_answer(answer)
    if answer.status == 200:
        assert {"total", "total_page", "page_no", "page_size", "data"} <= set(data)
        assert 1 <= data["page_size"] <= 100 and data["page_no"] >= 1
        assert len(data["data"]) <= data["page_size"]
    else:
        assert answer.status == 400 and data["code"] == "InvalidParameter"


def _submitted(live_server: LiveServer) -> str:
    body = {
        "model": MODEL.name,
        "input": {
            "prompt": "[Image 1] waits.",
            "media": [{"type": "reference_image", "url": "https://img.test/a"}],
        },
    }
    r = live_server.submit(body)
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["task_id"])


@HTTP
@given(
    data=st.data(),
    method=st.sampled_from(["GET", "GET", "POST", "HEAD", "DELETE"]),
    cancel=st.booleans(),
    keyed=st.booleans(),
)
def test_task_path_text_never_5xx(
    live_server: LiveServer, raw: Raw, data: st.DataObject, method: str, cancel: bool, keyed: bool
) -> None:
    real = _real_task(live_server)
    text = data.draw(
        st.sampled_from([real, real.upper(), real + "%00", "%20" + real, real + "/", real + "%2F"])
        | st.builds(lambda t, safe: encoded(t, safe), any_text, st.sampled_from(["", "/", "/:@"]))
        | junk
        | st.integers(1, 9000).map(lambda n: "9" * n)
    )
    target = f"/api/v1/tasks/{text}" + ("/cancel" if cancel else "")
    answer = raw.request(method, target, headers=auth(live_server) if keyed else {})
    if method == "HEAD":
        assert answer.status < 500
        return
    body = assert_api_answer(answer)
    if answer.status == 200 and method == "GET" and not cancel and "output" in body:
        assert body["output"]["task_status"] in ("PENDING", "CANCELED", "UNKNOWN")
    if not keyed and answer.status not in (307, 404, 405):
        assert answer.status == 401


def _real_task(live_server: LiveServer) -> str:
    """One task of this server (submitted once per server; no worker runs, so it stays PENDING or CANCELED)."""
    task_id = getattr(live_server, "fuzz_task_id", None)
    if task_id is None:
        task_id = _submitted(live_server)
        live_server.fuzz_task_id = task_id  # type: ignore[attr-defined]
    return str(task_id)


expires_values = st.one_of(
    st.integers(0, 10**15).map(str),
    st.just(str(int(time.time()) + 3600)),
    st.sampled_from(["", "-1", "²", "١٢٣", "1e10", " 1", "9" * 13, "9" * 5000, "0x10"]),
    query_text,
)
signature_values = st.one_of(
    st.just(""), st.text(string.ascii_letters + string.digits + "-_=+/", max_size=50), query_text
)
storage_keys = st.one_of(
    st.sampled_from(
        ["results/a.mp4", "results/", "results/../db.sqlite", "../db.sqlite", ".partial/x", "a//b"]
    ),
    st.builds(lambda a, b: f"{a}/{b}", any_text, any_text),
    any_text,
    st.integers(200, 400).map(lambda n: "results/" + "x" * n + ".mp4"),
    st.integers(100, 200).map(lambda n: "results/" + "视" * n + ".mp4"),
    st.integers(15, 30).map(lambda n: "/".join(["d" * 250] * n)),  # a path longer than the system's PATH_MAX
)


@HTTP
@given(
    key=storage_keys,
    expires=expires_values,
    signature=signature_values,
    signed=st.booleans(),
    extra=st.lists(st.tuples(st.sampled_from(["Expires", "Signature", "x"]), query_text), max_size=2),
    method=st.sampled_from(["GET", "HEAD"]),
    byte_range=st.none()
    | st.sampled_from(["bytes=0-3", "bytes=5-2", "bytes=-0", "bytes=99-", "bytes=a-b", "x"]),
)
def test_file_links_never_5xx(
    live_server: LiveServer,
    raw: Raw,
    key: str,
    expires: str,
    signature: str,
    signed: bool,
    extra: list,
    method: str,
    byte_range: str | None,
) -> None:
    storage = live_server.storage
    assert isinstance(storage, LocalStorage)
    existing = "results/a.mp4"
    if not storage.exists(existing):
        (storage.root / "results").mkdir(exist_ok=True)
        (storage.root / existing).write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    if signed and not _has_surrogate(key):
        # A link this server signed itself, for whatever key: the signature is right, the key is the question.
        url = urlsplit(storage.url_for(key, int(time.time()) + 3600))
        target = f"{url.path}?{url.query}"
    else:
        target = (
            f"/files/{encoded(key, '/')}?Expires={encoded(expires, '%')}&Signature={encoded(signature, '%')}"
        )
        signed = False
    for name, value in extra:
        target += f"&{name}={value}"
    headers = {"Range": byte_range} if byte_range else {}
    answer = raw.request(method, target, headers=headers)
    assert answer.status < 500, (answer.status, target, answer.body[:300])
    if not signed and not extra:
        # Starlette's {key:path} does not match a newline: such a path matches no route at all.
        assert answer.status == 403 or ("\n" in key and answer.status == 404), answer.status
    if answer.status in (403, 404) and method == "GET":
        data = answer.json()
        assert {"code", "message"} <= set(data)


# --- 3. the upload policy and form -----------------------------------------------------------------------


@HTTP
@given(
    method=st.sampled_from(["GET", "GET", "POST", "PUT"]),
    pairs=st.lists(
        st.tuples(
            st.sampled_from(["action", "model"]) | any_text,
            st.sampled_from(["getPolicy", "getpolicy", "GETPOLICY", "", MODEL.name]) | any_text,
        ),
        max_size=4,
    ),
    authorization=st.sampled_from(["valid", "none", "Bearer ", "Bearer sk-nope", "Basic abc", "bearer valid"])
    | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
)
def test_upload_policy_request_never_5xx(
    live_server: LiveServer, raw: Raw, method: str, pairs: list, authorization: str
) -> None:
    headers = {}
    if authorization == "valid":
        headers = auth(live_server)
    elif authorization == "bearer valid":
        headers = {"Authorization": f"bearer {live_server.key}"}
    elif authorization != "none":
        headers = {"Authorization": authorization}
    query = "&".join(f"{encoded(k)}={encoded(v)}" for k, v in pairs)
    answer = raw.request(method, f"/api/v1/uploads?{query}", headers=headers)
    data = assert_api_answer(answer)
    if answer.status == 200:
        assert method == "GET" and dict(pairs).get("action") == "getPolicy"
        needed = {"oss_access_key_id", "signature", "policy", "upload_dir", "x_oss_object_acl"}
        assert needed | {"x_oss_forbid_overwrite", "upload_host"} <= set(data["data"])


def _policy(live_server: LiveServer, raw: Raw) -> dict[str, str]:
    answer = raw.request("GET", "/api/v1/uploads?action=getPolicy", headers=auth(live_server))
    assert answer.status == 200, answer.body
    return dict(answer.json()["data"])


def _tree(root: Path) -> set[str]:
    """Every file and directory under the storage root (a refused upload must add none: not even a directory)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} - {PARTIAL_DIR}


def plain_name(name: str) -> bool:
    """The test's own idea of a file name a policy's key may end in (one path part the filesystem can hold)."""
    return (
        0 < len(name.encode("utf-8", "surrogatepass")) <= 255
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name)
    )


@dataclass
class Part:
    name: bytes | None
    value: bytes
    filename: bytes | None = None
    content_type: bytes | None = None
    extra_headers: bytes = b""


def form_body(parts: list[Part], boundary: bytes) -> bytes:
    out = bytearray()
    for part in parts:
        out += b"--" + boundary + b"\r\nContent-Disposition: form-data"
        if part.name is not None:
            out += b'; name="' + part.name + b'"'
        if part.filename is not None:
            out += b'; filename="' + part.filename + b'"'
        out += b"\r\n"
        if part.content_type is not None:
            out += b"Content-Type: " + part.content_type + b"\r\n"
        out += part.extra_headers + b"\r\n" + part.value + b"\r\n"
    return bytes(out + b"--" + boundary + b"--\r\n")


def sdk_form(policy: dict[str, str], key: str, content_type: str = "image/png") -> list[Part]:
    """The fields the dashscope SDK sends, in its order (``file`` comes last and is added by the caller)."""
    fields = [
        ("OSSAccessKeyId", policy["oss_access_key_id"]),
        ("Signature", policy["signature"]),
        ("policy", policy["policy"]),
        ("key", key),
        ("x-oss-object-acl", policy["x_oss_object_acl"]),
        ("x-oss-forbid-overwrite", policy["x_oss_forbid_overwrite"]),
        ("success_action_status", "200"),
        ("x-oss-content-type", content_type),
    ]
    return [Part(n.encode(), v.encode("utf-8", "surrogatepass")) for n, v in fields]


plain_names = (
    st.text(st.characters(exclude_categories=["Cc", "Cs"], exclude_characters="/\\"), min_size=1, max_size=80)
    | st.sampled_from(
        ["a.png", "...", ".hidden", " ", "-rf", "a b.jpg", "名字.png", "x" * 255, "名" * 85, "%2e%2e"]
    )
).filter(plain_name)
too_long_names = st.builds(
    lambda chars, n: (chars * 255)[:n],
    st.sampled_from(["视", "名字", "🎬", "é", "a视"]),
    st.integers(86, 255),
).filter(lambda name: len(name.encode()) > 255)
odd_bytes = st.binary(max_size=40) | st.sampled_from(
    [b"", b"\x00", b"\xff\xfe", b"\r\n", b'"', b"a\r\nX-Evil: 1"]
)
file_bytes = st.binary(max_size=2048) | st.sampled_from(
    [b"", b"\x89PNG\r\n\x1a\n" + bytes(64), b"\r\n--" * 10]
)


@HTTP
@given(
    name=plain_names,
    payload=file_bytes,
    content_type=st.sampled_from(["image/png", "", "application/octet-stream", "text/html; charset=utf-8"])
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    filename=st.none() | odd_bytes.filter(lambda b: not (set(b) & set(b'\r\n"'))),
    part_type=st.none() | st.sampled_from([b"image/png", b"text/plain", b"x/../y", b""]),
    drop=st.sets(st.sampled_from(["OSSAccessKeyId", "x-oss-object-acl", "x-oss-forbid-overwrite"])),
    extra=st.lists(
        st.tuples(st.text(string.ascii_letters + "-_", min_size=1, max_size=12), odd_bytes), max_size=4
    ),
)
def test_valid_policy_and_key_still_upload(
    live_server: LiveServer,
    raw: Raw,
    name: str,
    payload: bytes,
    content_type: str,
    filename: bytes | None,
    part_type: bytes | None,
    drop: set[str],
    extra: list,
) -> None:
    assert isinstance(live_server.storage, LocalStorage)
    root = live_server.storage.root
    policy = _policy(live_server, raw)
    key = f"{policy['upload_dir']}/{name}"
    parts = [p for p in sdk_form(policy, key, content_type) if p.name and p.name.decode() not in drop]
    # Extra fields the server does not know (never ones it reads).
    known = {"policy", "Signature", "key", "file", "x-oss-content-type"}
    parts += [Part(n.encode(), v) for n, v in extra if n not in known]
    parts.append(Part(b"file", payload, filename if filename is not None else b"a.png", part_type))
    boundary = uuid.uuid4().hex.encode()
    before = _tree(root)
    answer = raw.request(
        "POST",
        uploads_path(policy),
        body=form_body(parts, boundary),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    assert answer.status == 200, (answer.status, answer.body[:300], key)
    added = {p for p in _tree(root) - before if (root / p).is_file()}
    assert added == {f"uploads/{key}"}
    assert (root / "uploads" / key).read_bytes() == payload


def uploads_path(policy: dict[str, str]) -> str:
    url = urlsplit(policy["upload_host"])
    assert url.hostname == "127.0.0.1"
    return url.path


def _key_outside(policy: dict[str, str]) -> st.SearchStrategy[str]:
    d = policy["upload_dir"]
    other = d.rsplit("/", 1)[0] + "/" + uuid.uuid4().hex
    return st.one_of(
        st.sampled_from(
            [
                "",
                d,
                d + "/",
                d + "/.",
                d + "/..",
                d + "/../a.png",
                d + "/sub/a.png",
                d + "//a.png",
                d + "\\a.png",
                d + "/a\\b.png",
                d + "/a\x00.png",
                d + "/a\nb.png",
                d + "/a\x7f.png",
                d + "a.png",
                "/" + d + "/a.png",
                "../" + d + "/a.png",
                other + "/a.png",
                "uploads/" + d + "/a.png",
                d + "/" + "x" * 256,
                d + "/" + "视" * 86,  # 86 characters, but 258 bytes: more than a file name can hold
                d.upper() + "/a.png",
            ]
        ),
        st.builds(lambda t: f"{d}/{t}", any_text).filter(lambda k: not plain_name(k[len(d) + 1 :])),
        any_text,
    )


# In the order they are applied: edits of the fields, then of the file parts, then of the body as a whole.
MUTATIONS = [
    "signature",
    "policy",
    "expired",
    "key_outside",
    "long_name",
    "field_names",
    "drop_policy",
    "drop_signature",
    "drop_key",
    "too_many_fields",
    "long_field",
    "part_headers",
    "two_files",
    "no_file",
    "file_first",
    "overwrite",
    "bogus_boundary",
    "content_type",
    "unterminated",
    "truncated",
    "random_body",
]
# A form with only these is still valid and must upload; with "part_headers" (odd bytes in the file part's
# head, which may or may not parse) either answer is right, as long as it keeps the properties.
HARMLESS = {"two_files"}
AMBIGUOUS = {"part_headers"}


@HTTP
@given(data=st.data(), mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3, unique=True))
def test_hostile_upload_forms_store_nothing(
    live_server: LiveServer, raw: Raw, data: st.DataObject, mutations: list[str]
) -> None:
    assert isinstance(live_server.storage, LocalStorage)
    root = live_server.storage.root
    mutations = sorted(mutations, key=MUTATIONS.index)
    must_accept = set(mutations) <= HARMLESS
    must_refuse = bool(set(mutations) - HARMLESS - AMBIGUOUS)
    policy = _policy(live_server, raw)
    upload_dir = policy["upload_dir"]
    name = data.draw(plain_names, label="name")
    key = f"{upload_dir}/{name}"
    payload = data.draw(file_bytes, label="payload")
    parts = sdk_form(policy, key)
    file_part = Part(b"file", payload, b"a.png", b"image/png")
    boundary = uuid.uuid4().hex.encode()
    content_type = f"multipart/form-data; boundary={boundary.decode()}"

    def field(field_name: str) -> Part:
        return next((p for p in parts if p.name == field_name.encode()), Part(None, b""))

    tail: list[Part] = [file_part]
    body: bytes | None = None
    for mutation in mutations:
        if mutation == "signature":
            value = data.draw(odd_bytes | st.text(max_size=60).map(str.encode), label="signature")
            assume(value != policy["signature"].encode())
            field("Signature").value = value
        elif mutation == "policy":
            value = data.draw(odd_bytes | st.just(policy["policy"][:-4].encode()), label="policy")
            assume(value != policy["policy"].encode())
            field("policy").value = value
        elif mutation == "expired":
            # Signed with the server's own secret, but past its time.
            secret = live_server.store.get_or_create_secret(UPLOAD_SECRET, lambda: "unused")
            old = uploads.issue(secret, "acct", time.time() - uploads.POLICY_TTL_S - 60)
            field("policy").value, field("Signature").value = old.policy.encode(), old.signature.encode()
            field("key").value = f"{old.upload_dir}/{name}".encode()
        elif mutation == "key_outside":
            outside = data.draw(_key_outside(policy), label="key")
            field("key").value = outside.encode("utf-8", "surrogatepass")
        elif mutation == "long_name":
            # At most 255 characters, but more bytes than a file name can hold.
            long_name = data.draw(too_long_names, label="long_name")
            field("key").value = f"{upload_dir}/{long_name}".encode()
        elif mutation == "field_names":
            # Names mangled: the server no longer finds the ones it needs.
            for part in parts:
                if part.name in (b"policy", b"Signature", b"key"):
                    part.name = data.draw(
                        st.sampled_from([None, b"", part.name.upper(), part.name + b" ", b"x" + part.name]),
                        label="field_name",
                    )
        elif mutation in ("drop_policy", "drop_signature", "drop_key"):
            dropped = {"drop_policy": b"policy", "drop_signature": b"Signature", "drop_key": b"key"}[mutation]
            parts = [p for p in parts if p.name != dropped]
        elif mutation == "too_many_fields":
            parts += [
                Part(f"f{i}".encode(), b"x") for i in range(data.draw(st.integers(21, 40), label="fields"))
            ]
        elif mutation == "long_field":
            parts.append(
                Part(b"filler", b"x" * data.draw(st.integers(16 * 1024 + 1, 20 * 1024), label="long"))
            )
        elif mutation == "part_headers":
            file_part.filename = data.draw(odd_bytes, label="filename")
            file_part.content_type = data.draw(st.none() | odd_bytes, label="part_type")
            file_part.extra_headers = data.draw(
                st.sampled_from([b"", b"X-A: b\r\n", b"Content-Length: 0\r\n", b"no colon\r\n", b": v\r\n"]),
                label="extra_headers",
            )
        elif mutation == "two_files":
            # Only the first file counts; the second must not replace it (the form is still valid).
            tail = [file_part, Part(b"file", b"second file", b"b.png")]
        elif mutation == "no_file":
            tail = []
        elif mutation == "file_first":
            parts.insert(0, file_part)
            tail = []
        elif mutation == "overwrite":
            first = form_body([*sdk_form(policy, key), Part(b"file", b"first", b"a.png")], boundary)
            answer = raw.request(
                "POST", uploads_path(policy), body=first, headers={"Content-Type": content_type}
            )
            assert answer.status == 200, answer.body
        elif mutation == "bogus_boundary":
            content_type = data.draw(
                st.sampled_from(
                    [
                        "multipart/form-data",
                        "multipart/form-data; boundary=",
                        'multipart/form-data; boundary=""',
                        "multipart/form-data; boundary=other",
                        "multipart/form-data; boundary*=utf-8''" + boundary.decode(),
                        "multipart/form-data; boundary=" + "b" * 5000,
                    ]
                ),
                label="content_type",
            )
        elif mutation == "content_type":
            content_type = data.draw(
                st.sampled_from(["", "application/json", "text/plain", "application/x-www-form-urlencoded"])
                | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
                label="content_type",
            )
            assume(not content_type.strip(" \t").lower().startswith("multipart/form-data"))
        elif mutation in ("unterminated", "truncated"):
            # The body ends inside the file part (a complete first file would be taken: OSS ignores what follows
            # it): right after its bytes, with no closing delimiter, or anywhere before.
            complete = form_body([*parts, file_part], boundary)
            end_of_file = len(complete) - len(b"\r\n--" + boundary + b"--\r\n")
            cut = (
                end_of_file
                if mutation == "unterminated"
                else data.draw(st.integers(0, end_of_file), label="cut")
            )
            body = complete[:cut]
        elif mutation == "random_body":
            body = data.draw(st.binary(max_size=400), label="body")

    before = _tree(root)
    answer = raw.request(
        "POST",
        uploads_path(policy),
        body=form_body([*parts, *tail], boundary) if body is None else body,
        headers={"Content-Type": content_type} if content_type else {},
    )
    after = _tree(root)
    if answer.status == 200:
        # Accepted: then one file, directly inside the policy's directory, holding the first file's bytes.
        assert not must_refuse, (mutations, answer.status)
        added = {p for p in after - before if (root / p).is_file()}
        assert len(added) == 1, added
        stored = added.pop().removeprefix("uploads/")
        assert stored.startswith(upload_dir + "/") and plain_name(stored[len(upload_dir) + 1 :]), stored
        content = (root / "uploads" / stored).read_bytes()
        # Odd bytes in the file part's head (a bare CRLF) may end it early: the rest of it is then file bytes.
        assert content == payload or ("part_headers" in mutations and content.endswith(payload)), content[
            :100
        ]
        if must_accept:
            assert stored == key
        return
    assert not must_accept, (mutations, answer.status, answer.body)
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert_api_answer(answer)
    assert after == before, sorted(after ^ before)  # a refused upload leaves nothing, not even a directory


# --- regressions: what the fuzz found ----------------------------------------------------------------------


def test_signed_link_to_a_name_the_filesystem_cannot_hold_is_not_found(
    live_server: LiveServer, raw: Raw
) -> None:
    # Was a 500 (OSError ENAMETOOLONG from Path.is_file in the /files route).
    storage = live_server.storage
    assert isinstance(storage, LocalStorage)
    for key in ("results/" + "x" * 300 + ".mp4", "/".join(["d" * 250] * 20)):
        url = urlsplit(storage.url_for(key, int(time.time()) + 3600))
        answer = raw.request("GET", f"{url.path}?{url.query}")
        assert answer.status == 404 and answer.json()["code"] == "NotFound"


def test_upload_form_with_an_overlong_boundary_is_refused(live_server: LiveServer, raw: Raw) -> None:
    # Was a 500: python-multipart refuses boundaries over 256 bytes with a FormParserError that is not a
    # MultipartParseError.
    assert isinstance(live_server.storage, LocalStorage)
    policy = _policy(live_server, raw)
    boundary = b"b" * 300
    before = _tree(live_server.storage.root)
    answer = raw.request(
        "POST",
        uploads_path(policy),
        body=form_body([*sdk_form(policy, policy["upload_dir"] + "/a.png"), Part(b"file", b"x")], boundary),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    assert answer.status == 400 and assert_api_answer(answer)["code"] == "InvalidParameter"
    assert _tree(live_server.storage.root) == before


def test_upload_key_name_over_255_bytes_is_refused(live_server: LiveServer, raw: Raw) -> None:
    # Was a 503 (ENAMETOOLONG when the file was linked into place) that left the upload's directories behind:
    # the name was checked in characters (86 of them), not in the bytes a file name holds (258).
    assert isinstance(live_server.storage, LocalStorage)
    policy = _policy(live_server, raw)
    upload_dir = policy["upload_dir"]
    assert uploads.key_in_dir(f"{upload_dir}/{'视' * 85}", upload_dir)  # 255 bytes: fits
    assert not uploads.key_in_dir(f"{upload_dir}/{'视' * 86}", upload_dir)
    before = _tree(live_server.storage.root)
    boundary = uuid.uuid4().hex.encode()
    answer = raw.request(
        "POST",
        uploads_path(policy),
        body=form_body([*sdk_form(policy, f"{upload_dir}/{'视' * 86}"), Part(b"file", b"x")], boundary),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"},
    )
    assert answer.status == 400 and assert_api_answer(answer)["code"] == "InvalidParameter"
    assert _tree(live_server.storage.root) == before
