"""One contract for every Storage: local directory and S3 (a real S3 server, SeaweedFS, on loopback)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
import requests

from services import SeaweedS3
from videosynth.errors import InvalidImageSize
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.storage.local import LocalStorage
from videosynth.wiring import build_storage


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "store", public_url="http://127.0.0.1:1", secret="s3cr3t")
        return
    s3: SeaweedS3 = request.getfixturevalue("s3_server")
    settings = Settings.from_environ(
        {**s3.environ(), "VIDEOSYNTH_STORAGE_URL": f"s3://{s3.bucket}/test-{uuid.uuid4().hex[:8]}"}
    )
    yield build_storage(settings, store=None)  # type: ignore[arg-type]  # S3 needs no shared secret


def test_put_exists_delete(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "v.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"x" * 1000)
    assert not storage.exists("results/a.mp4")
    storage.put_file("results/a.mp4", src, "video/mp4")
    assert storage.exists("results/a.mp4")
    assert storage.list_keys("results/") == ["results/a.mp4"]
    assert storage.read_bytes("results/a.mp4", 10_000) == src.read_bytes()
    assert storage.read_bytes("results/missing.mp4", 10_000) is None
    with pytest.raises(InvalidImageSize):
        storage.read_bytes("results/a.mp4", 100)
    storage.put_file("results/a.mp4", src, "video/mp4")  # replacing is allowed
    storage.delete("results/a.mp4")
    assert not storage.exists("results/a.mp4")
    storage.delete("results/a.mp4")  # deleting twice is harmless
    assert storage.list_keys("results/") == []


def test_url_expiry_is_encoded(storage: Storage) -> None:
    soon, later = (
        storage.url_for("results/a.mp4", int(time.time()) + 60),
        storage.url_for("results/a.mp4", int(time.time()) + 3600),
    )
    assert soon.startswith("http") and soon != later


def test_s3_presigned_links(s3_server: SeaweedS3, tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {**s3_server.environ(), "VIDEOSYNTH_STORAGE_URL": f"s3://{s3_server.bucket}/links"}
    )
    storage = build_storage(settings, store=None)  # type: ignore[arg-type]
    data = bytes(range(256)) * 40
    src = tmp_path / "v.mp4"
    src.write_bytes(data)
    storage.put_file("results/v.mp4", src, "video/mp4")
    url = storage.url_for("results/v.mp4", int(time.time()) + 600)
    assert s3_server.secret_key not in url
    r = requests.get(url, timeout=10)
    assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "video/mp4"
    r = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert r.status_code == 206 and r.content == data[10:20]
    assert requests.get(url.split("?")[0], timeout=10).status_code == 403  # anonymous
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert requests.get(tampered, timeout=10).status_code == 403
    short = storage.url_for("results/v.mp4", int(time.time()) + 1)
    time.sleep(2.5)
    assert requests.get(short, timeout=10).status_code == 403


def test_s3_multipart_upload(s3_server: SeaweedS3, tmp_path: Path) -> None:
    from videosynth.storage.s3 import S3Storage

    storage = S3Storage(
        s3_server.bucket, "multipart", endpoint_url=s3_server.endpoint, access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key, multipart_threshold=5 * 1024 * 1024,
    )  # fmt: skip
    data = (b"0123456789abcdef" * 65536) * 12  # 12 MiB: three parts
    src = tmp_path / "big.mp4"
    src.write_bytes(data)
    storage.put_file("results/big.mp4", src, "video/mp4")
    head = storage._client.head_object(Bucket=s3_server.bucket, Key="multipart/results/big.mp4")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart ETag names its part count
    r = requests.get(storage.url_for("results/big.mp4", int(time.time()) + 60), timeout=30)
    assert r.content == data


def test_expired_uploads_are_swept(storage: Storage, tmp_path: Path) -> None:
    from datetime import datetime

    from videosynth.maintenance import sweep_uploads

    src = tmp_path / "ref.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    now = datetime(2026, 11, 25, 9, 30, tzinfo=UTC).timestamp()

    def upload(day: str) -> str:
        key = f"uploads/videosynth-instant/acct-1/{day}/{uuid.uuid4().hex}/ref.png"
        storage.put_file(key, src, "image/png")
        return key

    # Uploaded on the 22nd: at least 48 h old whatever the hour. On the 23rd: maybe less than 48 h.
    old, recent, today = upload("2026-11-22"), upload("2026-11-23"), upload("2026-11-25")
    storage.put_file("uploads/unrecognised-shape.png", src, "image/png")
    storage.put_file("results/t-1.mp4", src, "video/mp4")
    assert sweep_uploads(storage, now) == 1
    assert not storage.exists(old)
    assert all(
        storage.exists(k) for k in (recent, today, "uploads/unrecognised-shape.png", "results/t-1.mp4")
    )
    if isinstance(storage, LocalStorage):  # and no empty directories are left behind
        assert not (storage.root / "uploads/videosynth-instant/acct-1/2026-11-22").exists()
        assert (storage.root / "uploads/videosynth-instant/acct-1").is_dir()
    assert sweep_uploads(storage, now) == 0


def test_a_put_without_overwrite_has_exactly_one_winner(storage: Storage, tmp_path: Path) -> None:
    import threading

    from videosynth.storage.base import ObjectExists

    sources = []
    for i in range(16):
        src = tmp_path / f"u{i}.png"
        src.write_bytes(f"upload {i} ".encode() * 2000)
        sources.append(src)
    outcomes: dict[int, str] = {}
    start = threading.Barrier(len(sources))

    def put(i: int) -> None:
        start.wait()
        try:
            storage.put_file("uploads/one-key.png", sources[i], "image/png", overwrite=False)
            outcomes[i] = "won"
        except ObjectExists:
            outcomes[i] = "exists"
        except Exception as exc:  # noqa: BLE001 - any other outcome fails the test below
            outcomes[i] = repr(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(sources))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [i for i, o in outcomes.items() if o == "won"]
    assert sorted(outcomes.values()).count("exists") == len(sources) - 1, outcomes
    assert len(winners) == 1
    assert storage.read_bytes("uploads/one-key.png", 10**6) == sources[winners[0]].read_bytes()
    with pytest.raises(ObjectExists):
        storage.put_file("uploads/one-key.png", sources[0], "image/png", overwrite=False)
    assert storage.list_keys("uploads/") == ["uploads/one-key.png"]


def test_dot_files_are_keys_like_any_other(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "v.png"
    src.write_bytes(b"x" * 100)
    storage.put_file("uploads/a/.hidden.png", src, "image/png")
    assert storage.list_keys("uploads/") == ["uploads/a/.hidden.png"]
