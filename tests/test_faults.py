"""Faults, automated, with real processes: PostgreSQL restarted under load, the S3 server stopped and
restarted during uploads, the local storage disk full, ``kill -9`` of the API during a submit burst, and
1,000 tasks through 4 workers.

Everything is real (``videosynth serve`` and ``videosynth worker`` subprocesses, a throwaway PostgreSQL,
SeaweedFS, a tmpfs) and on loopback. Nothing asserts a duration: waits are bounded only so that a hang
fails instead of blocking. Each test prints its figures (``[faults] ...`` lines, shown by
``make test-faults``) for docs/reliability.md. The slow ones carry the ``faults`` marker: ``make test``
skips them and ``make test-faults`` (run by ``.ci/run``) runs them.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from conftest import SUBMIT_PATH, write_image
from services import PostgresCluster, SeaweedS3, free_port, fresh_database
from test_scale import Deployment
from videosynth.apikeys import display_prefix, hash_key, new_api_key
from videosynth.errors import ErrorKind, StorageUnavailable, StoreError
from videosynth.storage.local import PARTIAL_DIR
from videosynth.storage.s3 import S3Storage
from videosynth.tasks.models import Task, TaskFilter, TaskStatus
from videosynth.tasks.postgres import PostgresTaskStore
from videosynth.tasks.sqlite import SqliteTaskStore
from videosynth.tasks.store import TaskStore

# The smallest task there is: 480P, 3 s, one small reference image.
PARAMETERS = {"resolution": "480P", "ratio": "16:9", "duration": 3, "watermark": False}


def report(test: str, **figures: object) -> None:
    print(f"[faults] {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def submit_body(urls: list[str]) -> dict:
    return {
        "model": "happyhorse-1.1-r2v",
        "input": {
            "prompt": "[Image 1] walks.",
            "media": [{"type": "reference_image", "url": u} for u in urls],
        },
        "parameters": PARAMETERS,
    }


@dataclass
class Answer:
    """One HTTP exchange as the client saw it: a status and body, or the error that stood for them."""

    at: float
    status: int | None
    body: dict | None = None
    error: str | None = None

    @property
    def task_id(self) -> str | None:
        if self.status != 200 or self.body is None:
            return None
        return str(self.body["output"]["task_id"])


def exchange(session: requests.Session, method: str, url: str, key: str, **kwargs: object) -> Answer:
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    try:
        r = session.request(method, url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]
    except requests.RequestException as exc:
        return Answer(time.monotonic(), None, error=type(exc).__name__)
    try:
        body = r.json()
    except ValueError:
        body = None
    return Answer(time.monotonic(), r.status_code, body, None if body is not None else r.text[:200])


def is_dashscope_error(a: Answer, status: int, code: str) -> bool:
    """A DashScope error body (code, message, request id) with the expected status and code."""
    b = a.body or {}
    return (
        a.status == status and b.get("code") == code and bool(b.get("message")) and bool(b.get("request_id"))
    )


def new_key(store: TaskStore, name: str) -> tuple[str, str]:
    key = new_api_key()
    made = store.create_key(name, hash_key(key), display_prefix(key), int(time.time() * 1000))
    return key, made.account_id


def all_tasks(store: TaskStore, account_id: str) -> dict[str, Task]:
    """Every task of the account, whatever was answered to whom."""
    _total, tasks = store.list(account_id, TaskFilter(), 0, 1_000_000)
    return {t.task_id: t for t in tasks}


def wait_terminal(store: TaskStore, ids: list[str], timeout: float) -> dict[str, Task]:
    """The tasks, once every one is terminal; fails (does not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    found: dict[str, Task] = {}
    while True:
        with contextlib.suppress(StoreError):  # the test's own connection may have seen the outage
            found = store.get_many(ids)
            if len(found) == len(ids) and all(t.status.is_terminal for t in found.values()):
                return found
        if time.monotonic() > deadline:
            waiting = Counter(t.status.value for t in found.values() if not t.status.is_terminal)
            missing = len(set(ids) - set(found))
            raise AssertionError(
                f"not finished after {timeout} s: {dict(waiting)}, {missing} not in the store"
            )
        time.sleep(0.5)


def pid_of(worker_id: str | None) -> int | None:
    # host:pid:random
    parts = (worker_id or "").split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its live children (a worker and its engine process)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    children: list[int] = []
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(c) for c in (task / "children").read_text().split()]
    return total + sum(cpu_seconds(c) for c in children)


def log_tail(dep: Deployment, n: int = 3000) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}" for p in sorted(dep.tmp.glob("*.log"))
    )


@dataclass
class Load:
    """Clients that submit and poll in a loop, recording every answer, until stopped."""

    base_url: str
    key: str
    urls: list[str]
    submitters: int = 2
    pollers: int = 2
    pause_s: float = 0.1
    #: a submitter stops at its first request that got no answer (the server is gone)
    until_unanswered: bool = False
    submits: list[Answer] = field(default_factory=list)
    polls: list[tuple[str, Answer]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [i for i in (a.task_id for a in list(self.submits)) if i is not None]

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._submit, daemon=True) for _ in range(self.submitters)]
        self._threads += [threading.Thread(target=self._poll, daemon=True) for _ in range(self.pollers)]
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the clients to end by themselves; True if they did."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()
        assert self.join(60), "a client is stuck in a request"

    def _submit(self) -> None:
        with requests.Session() as s:
            while not self._stop.is_set():
                a = exchange(s, "POST", self.base_url + SUBMIT_PATH, self.key, json=submit_body(self.urls))
                self.submits.append(a)
                if a.status is None and self.until_unanswered:
                    return
                self._stop.wait(self.pause_s)

    def _poll(self) -> None:
        rng = random.Random(7)
        with requests.Session() as s:
            while not self._stop.is_set():
                ids = self.ids
                if ids:
                    task_id = rng.choice(ids)
                    self.polls.append(
                        (task_id, exchange(s, "GET", f"{self.base_url}/api/v1/tasks/{task_id}", self.key))
                    )
                self._stop.wait(self.pause_s / 2)


@pytest.fixture
def image_urls(tmp_path: Path, image_server) -> list[str]:  # type: ignore[no-untyped-def]
    write_image(image_server.root / "a.png", 640, 480, seed=3)
    return [image_server.url("a.png")]


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "work"),
        "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
        "VIDEOSYNTH_DRAIN_SECONDS": "1",
        **extra,
    }


@contextlib.contextmanager
def deployment(env: dict[str, str], tmp_path: Path, key: str) -> Iterator[Deployment]:
    dep = Deployment(env=env, tmp=tmp_path, key=key)
    try:
        yield dep
    finally:
        dep.stop_all(signal.SIGKILL)


# --- PostgreSQL restarted under load --------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresCluster]:
    """A cluster of this module's own: it is restarted, which the session's shared one must not be."""
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


def test_postgres_restart_under_load(tmp_path: Path, own_pg: PostgresCluster, image_urls: list[str]) -> None:
    url = fresh_database(own_pg)
    store = PostgresTaskStore(url)
    store.migrate()
    key, account = new_key(store, "pg-restart")
    env = base_env(
        tmp_path,
        VIDEOSYNTH_DATABASE_URL=url,
        VIDEOSYNTH_STORAGE_URL=f"file://{tmp_path / 'storage'}",
        VIDEOSYNTH_LEASE_SECONDS="10",
        VIDEOSYNTH_POLL_INTERVAL="0.5",
    )
    with deployment(env, tmp_path, key) as dep:
        dep.start_api(workers=0)
        worker = dep.start_worker()
        api = dep.api[0]
        load = Load(dep.base_url, key, image_urls, submitters=2, pollers=2, pause_s=0.2)
        load.start()
        try:
            # Under load: tasks submitted, polled, and the worker busy finishing them.
            deadline = time.monotonic() + 120
            while not any(t.status is TaskStatus.SUCCEEDED for t in store.get_many(load.ids).values()):
                assert time.monotonic() < deadline, "no task finished before the restart"
                time.sleep(0.2)
            before = len(load.submits)
            t0 = time.monotonic()
            own_pg.restart("fast")
            restarted = time.monotonic()
            # Recovers by itself: the same processes answer 200 again, with no help.
            deadline = restarted + 120
            while sum(1 for a in load.submits[before:] if a.at > restarted and a.status == 200) < 20:
                assert time.monotonic() < deadline, "the API did not recover after the restart"
                time.sleep(0.1)
        finally:
            load.stop()
        answers = [*load.submits, *(a for _, a in load.polls)]
        bad = [
            a
            for a in answers
            if a.status not in (200, 503)
            or (a.status == 503 and not is_dashscope_error(a, 503, "ServiceUnavailable"))
        ]
        errors = [a for a in answers if a.status != 200]
        outage_s = max(a.at for a in errors) - min(a.at for a in errors) if errors else 0.0
        # Every poll of an answered submit finds the task (the poll started after the 200 arrived).
        answered_at = {a.task_id: a.at for a in load.submits if a.task_id}
        unknown = [
            task_id
            for task_id, a in load.polls
            if a.status == 200 and a.body and a.body["output"]["task_status"] == "UNKNOWN"
        ]
        ids = load.ids
        finished = wait_terminal(store, ids, timeout=300)
        stored = all_tasks(store, account)
        extra = sorted(set(stored) - set(answered_at))
        everything = wait_terminal(store, sorted(stored), timeout=120)
        keys = sorted(
            p.relative_to(tmp_path / "storage").as_posix()
            for p in (tmp_path / "storage" / "results").iterdir()
        )
        report(
            "postgres_restart",
            submitted=len(load.submits),
            answered_200=len(ids),
            found=len(finished),
            lost=len(ids) - len(finished),
            stored_but_not_answered=len(extra),
            polls=len(load.polls),
            errors_503=sum(1 for a in errors if a.status == 503),
            other_errors=len(bad),
            errors_after_restart=sum(1 for a in errors if a.at > restarted),
            outage_seen_by_clients_s=f"{outage_s:.2f}",
            pg_ctl_restart_s=f"{restarted - t0:.2f}",
            succeeded=sum(1 for t in everything.values() if t.status is TaskStatus.SUCCEEDED),
            run_twice=sum(1 for t in everything.values() if t.attempts != 1),
            result_objects=len(keys),
        )
        # The outage was seen (as 503 ServiceUnavailable, nothing else), and no client waited for ever.
        assert errors, "no request met the restart"
        assert not bad, [(a.status, a.body, a.error) for a in bad[:5]]
        assert not unknown, unknown[:5]
        assert len(finished) == len(ids)
        assert all(t.status is TaskStatus.SUCCEEDED for t in everything.values()), Counter(
            (t.status.value, t.error_kind) for t in everything.values()
        )
        assert all(t.attempts == 1 for t in everything.values()), [
            (t.task_id, t.attempts) for t in everything.values() if t.attempts != 1
        ]
        assert keys == sorted(t.result_key for t in everything.values() if t.result_key)
        assert worker.poll() is None and api.poll() is None, log_tail(dep)
    store.close()


def test_s3_refusals_and_outages_are_storage_unavailable(s3_server: SeaweedS3, tmp_path: Path) -> None:
    """Every S3 call a worker or housekeeping makes turns an S3 failure into StorageUnavailable: an error
    answer from the server (here a wrong secret, as a 503 SlowDown or 500 would be) and no server at all.
    Anything else escapes the worker's handling: a result upload failed as InternalError, and a failed
    listing (the hourly upload sweep) killed the worker process."""
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 1000)
    refusing = S3Storage(
        s3_server.bucket, "refusals", endpoint_url=s3_server.endpoint, access_key_id=s3_server.access_key,
        secret_access_key="not-the-secret",
    )  # fmt: skip
    nobody = S3Storage(
        s3_server.bucket, "refusals", endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id=s3_server.access_key, secret_access_key=s3_server.secret_key,
    )  # fmt: skip
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = [
        ("put_file", ("results/a.mp4", video, "video/mp4"), {}),
        ("put_file", ("uploads/a.png", video, "image/png"), {"overwrite": False}),
        ("list_keys", ("uploads/",), {}),
        ("exists", ("results/a.mp4",), {}),
        ("read_bytes", ("uploads/a.png", 1000), {}),
        ("delete", ("results/a.mp4",), {}),
    ]
    seen: Counter[bool] = Counter()
    for storage in (refusing, nobody):
        for name, args, kwargs in calls:
            with pytest.raises(StorageUnavailable):
                getattr(storage, name)(*args, **kwargs)
            seen[storage is refusing] += 1
    report("s3_refusals", refused_calls=seen[True], calls_without_server=seen[False])


# --- the S3 server stopped and restarted during uploads -------------------------------------------------


@pytest.fixture
def own_s3() -> Iterator[SeaweedS3]:
    """An S3 server of this test's own: it is stopped and started again, which the shared one must not be."""
    server = SeaweedS3()
    server.start()
    yield server
    server.stop()


@pytest.mark.faults  # SeaweedFS takes from 1 to 20 s to start again
def test_s3_stopped_and_restarted_during_uploads(
    tmp_path: Path, pg_cluster: PostgresCluster, own_s3: SeaweedS3, image_urls: list[str]
) -> None:
    url = fresh_database(pg_cluster)
    store = PostgresTaskStore(url)
    store.migrate()
    key, _account = new_key(store, "s3-restart")
    prefix = f"faults-{os.getpid()}-{time.monotonic_ns()}"
    env = base_env(
        tmp_path,
        **own_s3.environ(),
        VIDEOSYNTH_DATABASE_URL=url,
        VIDEOSYNTH_STORAGE_URL=f"s3://{own_s3.bucket}/{prefix}",
        VIDEOSYNTH_LEASE_SECONDS="10",
        VIDEOSYNTH_POLL_INTERVAL="0.5",
    )
    storage = S3Storage(
        own_s3.bucket, prefix, endpoint_url=own_s3.endpoint, access_key_id=own_s3.access_key,
        secret_access_key=own_s3.secret_key,
    )  # fmt: skip
    with deployment(env, tmp_path, key) as dep, requests.Session() as client:
        dep.start_api(workers=0)
        workers = [dep.start_worker(), dep.start_worker()]

        def submit() -> str:
            a = exchange(client, "POST", dep.base_url + SUBMIT_PATH, key, json=submit_body(image_urls))
            assert a.task_id is not None, (a.status, a.body, a.error)
            return a.task_id

        before = [submit() for _ in range(16)]
        # Uploads are under way: some results are stored, more are being rendered.
        deadline = time.monotonic() + 120
        while sum(t.status is TaskStatus.SUCCEEDED for t in store.get_many(before).values()) < 2:
            assert time.monotonic() < deadline, "no task finished before the S3 server was stopped"
            time.sleep(0.1)
        # Tasks keep coming throughout, so uploads meet the server stopped, starting and started.
        load = Load(dep.base_url, key, image_urls, submitters=1, pollers=0, pause_s=0.25)
        load.start()
        try:
            down = time.monotonic()
            own_s3.halt()
            halted = time.monotonic()
            # The workers go on finishing tasks meanwhile; wait until one of them met the stopped server.
            deadline = time.monotonic() + 120
            while not any(t.status is TaskStatus.FAILED for t in store.get_many(before + load.ids).values()):
                assert time.monotonic() < deadline, "no upload met the stopped server (or it hangs)"
                time.sleep(0.1)
            time.sleep(1.0)  # a little longer, so that some uploads fail on their first try and retry
            starting = time.monotonic()
            own_s3.start()
            up, up_ms = time.monotonic(), int(time.time() * 1000)
            time.sleep(2.0)
        finally:
            load.stop()
        assert all(a.status == 200 for a in load.submits), [(a.status, a.body) for a in load.submits]
        during = load.ids
        after = [submit() for _ in range(6)]
        ids = before + during + after
        tasks = wait_terminal(store, ids, timeout=240)
        keys = storage.list_keys("results/")
        outcomes = Counter(
            (t.status.value, t.error_kind.value if t.error_kind else None) for t in tasks.values()
        )
        failed = [t for t in tasks.values() if t.status is TaskStatus.FAILED]
        stored_after_restart = Counter(
            pid_of(t.worker_id)
            for t in tasks.values()
            if t.status is TaskStatus.SUCCEEDED and (t.end_time_ms or 0) > up_ms
        )
        wire_codes = Counter(dep.status(t.task_id)["output"].get("code") for t in failed)
        report(
            "s3_restart",
            submitted=len(ids),
            succeeded=outcomes[("SUCCEEDED", None)],
            failed_upload=outcomes[("FAILED", ErrorKind.STORAGE_UNAVAILABLE.value)],
            other_outcomes={k: v for k, v in outcomes.items() if k[1] not in (None, "storage_unavailable")},
            wire_codes=dict(wire_codes),
            s3_down_s=f"{up - down:.2f}",
            stop_s=f"{halted - down:.2f}",
            start_s=f"{up - starting:.2f}",
            after_restart_succeeded=sum(tasks[i].status is TaskStatus.SUCCEEDED for i in after),
            stored_after_restart_per_worker=sorted(stored_after_restart.values()),
            result_objects=len(keys),
            worker_restarts=sum(w.poll() is not None for w in workers),
        )
        # Each affected task either succeeded (its upload retried past the outage) or failed with the
        # documented kind (DashScope's InternalError.Upload); none hangs and none fails otherwise.
        assert set(outcomes) <= {("SUCCEEDED", None), ("FAILED", ErrorKind.STORAGE_UNAVAILABLE.value)}, (
            outcomes
        )
        assert set(wire_codes) <= {"InternalError.Upload"}, wire_codes
        assert all(tasks[i].status is TaskStatus.SUCCEEDED for i in after)
        # Exactly one object per SUCCEEDED task (a failed upload leaves nothing), each run once.
        assert keys == sorted(t.result_key for t in tasks.values() if t.status is TaskStatus.SUCCEEDED)
        assert all(t.attempts == 1 for t in tasks.values())
        # The workers kept working: the same two processes, alive, and both ran tasks after the restart.
        assert all(w.poll() is None for w in workers), log_tail(dep)
        assert set(stored_after_restart) == {w.pid for w in workers}, stored_after_restart
        link = dep.status(after[-1])["output"]["video_url"]
        assert requests.get(link, timeout=30).status_code == 200
    store.close()


# --- the local storage disk full ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB filesystem of its own: a tmpfs, else a loop-mounted ext4 image; skipped where neither mounts."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    tried = []
    for how in (
        [["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mnt)]],
        [
            ["truncate", "-s", "8M", str(tmp_path / "disk.img")],
            ["mkfs.ext4", "-q", "-F", "-m", "0", str(tmp_path / "disk.img")],
            ["mount", "-o", "loop", str(tmp_path / "disk.img"), str(mnt)],
        ],
    ):
        results = [subprocess.run(cmd, capture_output=True, text=True, timeout=60) for cmd in how]
        if all(r.returncode == 0 for r in results):
            break
        tried.append("; ".join(r.stderr.strip() for r in results if r.returncode))
    else:
        pytest.skip(f"cannot mount a small filesystem here: {tried}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=60)


def fs_type(mountpoint: Path) -> str:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(mountpoint):
            return fields[2]
    return "?"


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file, whose removal gives the space back."""
    filler = disk / "filler"
    chunk = b"\0" * (64 * 1024)
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
        for size in (4096, 512, 1):  # the last partial chunk's worth
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def test_local_storage_disk_full(tmp_path: Path, small_disk: Path, image_urls: list[str]) -> None:
    storage_root = small_disk / "storage"
    store = SqliteTaskStore(tmp_path / "db.sqlite")
    store.migrate()
    key, _account = new_key(store, "disk-full")
    env = base_env(
        tmp_path,
        VIDEOSYNTH_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
        VIDEOSYNTH_STORAGE_URL=f"file://{storage_root}",
    )
    with deployment(env, tmp_path, key) as dep, requests.Session() as client:
        dep.start_api(workers=0)
        worker = dep.start_worker()
        api = dep.api[0]

        def submit(n: int) -> list[str]:
            answers = [
                exchange(client, "POST", dep.base_url + SUBMIT_PATH, key, json=submit_body(image_urls))
                for _ in range(n)
            ]
            assert all(a.task_id for a in answers), [(a.status, a.body) for a in answers]
            return [str(a.task_id) for a in answers]

        first = submit(1)
        assert wait_terminal(store, first, 120)[first[0]].status is TaskStatus.SUCCEEDED
        first_link = dep.status(first[0])["output"]["video_url"]
        filler = fill(small_disk)
        objects_before = sorted(p.name for p in (storage_root / "results").iterdir())

        full = submit(3)
        full_tasks = wait_terminal(store, full, 120)
        wire = [dep.status(i)["output"] for i in full]
        partials = sorted(p.name for p in (storage_root / PARTIAL_DIR).iterdir())
        objects_full = sorted(p.name for p in (storage_root / "results").iterdir())
        # The server keeps answering, and serves what it stored before, while the disk is full.
        served_while_full = requests.get(first_link, timeout=30).status_code
        # An upload (the SDK's oss:// flow) is refused cleanly too, and leaves nothing behind.
        policy = exchange(client, "GET", f"{dep.base_url}/api/v1/uploads?action=getPolicy", key)
        assert policy.status == 200 and policy.body is not None, policy
        data = policy.body["data"]
        upload = requests.post(
            data["upload_host"],
            data={
                "OSSAccessKeyId": data["oss_access_key_id"], "Signature": data["signature"],
                "policy": data["policy"], "key": data["upload_dir"] + "/a.png",
                "x-oss-object-acl": data["x_oss_object_acl"],
                "x-oss-forbid-overwrite": data["x_oss_forbid_overwrite"], "success_action_status": "200",
            },
            files={"file": ("a.png", (tmp_path / "www" / "a.png").read_bytes())},
            timeout=30,
        )  # fmt: skip
        upload_answer = Answer(
            time.monotonic(), upload.status_code, upload.json() if upload.content else None
        )
        partials_after_upload = sorted(p.name for p in (storage_root / PARTIAL_DIR).iterdir())
        uploads_stored = sorted(
            p.name for p in storage_root.rglob("*") if p.is_file() and "uploads" in p.parts
        )

        filler.unlink()
        after = submit(3)
        after_tasks = wait_terminal(store, after, 120)
        links = [dep.status(i)["output"]["video_url"] for i in after]
        served_after = [requests.get(link, timeout=30).status_code for link in links]
        report(
            "disk_full",
            filesystem=fs_type(small_disk),
            tasks_while_full=len(full),
            failed_upload=sum(t.error_kind is ErrorKind.STORAGE_UNAVAILABLE for t in full_tasks.values()),
            wire_codes=dict(Counter(o.get("code") for o in wire)),
            partial_files_left=len(partials) + len(partials_after_upload),
            upload_answer=f"{upload_answer.status} {(upload_answer.body or {}).get('code')}",
            served_while_full=served_while_full,
            tasks_after_space_back=len(after),
            succeeded_after=sum(t.status is TaskStatus.SUCCEEDED for t in after_tasks.values()),
            worker_restarts=int(worker.poll() is not None),
        )
        # Each task on the full disk failed cleanly: the documented kind, DashScope's InternalError.Upload.
        assert all(
            t.status is TaskStatus.FAILED and t.error_kind is ErrorKind.STORAGE_UNAVAILABLE
            for t in full_tasks.values()
        ), [(t.status, t.error_kind, t.error_detail) for t in full_tasks.values()]
        assert {o.get("code") for o in wire} == {"InternalError.Upload"}, wire
        # No partial file and no half object left behind.
        assert partials == [] and partials_after_upload == [] and objects_full == objects_before
        assert served_while_full == 200
        assert is_dashscope_error(upload_answer, 503, "InternalError.Upload"), upload_answer
        assert uploads_stored == []
        # Once there is space again, the same processes work as before.
        assert all(t.status is TaskStatus.SUCCEEDED for t in after_tasks.values())
        assert served_after == [200, 200, 200]
        assert worker.poll() is None and api.poll() is None, log_tail(dep)
    store.close()


# --- kill -9 of the API during a submit burst -----------------------------------------------------------


def test_kill_9_of_the_api_during_a_submit_burst(tmp_path: Path, image_urls: list[str]) -> None:
    store = SqliteTaskStore(tmp_path / "db.sqlite")
    store.migrate()
    key, account = new_key(store, "kill-api")
    env = base_env(
        tmp_path,
        VIDEOSYNTH_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
        VIDEOSYNTH_STORAGE_URL=f"file://{tmp_path / 'storage'}",
        VIDEOSYNTH_LEASE_SECONDS="5",
    )
    with deployment(env, tmp_path, key) as dep:
        dep.start_api(workers=1)
        api = dep.api[0]
        # The embedded worker is up (so it claims tasks during the burst, and is orphaned by the kill).
        with requests.Session() as s:
            warm = exchange(s, "POST", dep.base_url + SUBMIT_PATH, key, json=submit_body(image_urls)).task_id
        assert warm is not None and wait_terminal(store, [warm], 120)[warm].status is TaskStatus.SUCCEEDED
        # A burst: many clients submitting at once, as fast as they are answered.
        load = Load(dep.base_url, key, image_urls, submitters=16, pollers=0, pause_s=0, until_unanswered=True)
        load.start()
        try:
            deadline = time.monotonic() + 120
            while len(load.ids) < 80:
                assert time.monotonic() < deadline, "the burst was not answered"
                time.sleep(0.005)
            api.send_signal(signal.SIGKILL)
            api.wait(30)
            # Each client goes on until a submit of its own gets no answer (its request was cut off, or
            # the connection refused).
            assert load.join(60), "a client is stuck in a request to a dead server"
        finally:
            load.stop()
        answered = {*load.ids, warm}
        no_answer = [a for a in load.submits if a.status is None]
        other = [a for a in load.submits if a.status not in (None, 200)]
        stored_now = all_tasks(store, account)
        # The same database, a new API (and workers): everything answered is there and gets done.
        dep.start_api(workers=2)
        finished = wait_terminal(store, sorted(stored_now), timeout=240)
        report(
            "kill_9_api",
            submitted=len(load.submits),
            answered_200=len(answered),
            found=len(answered & set(stored_now)),
            lost=len(answered - set(stored_now)),
            stored_but_not_answered=len(set(stored_now) - answered),
            no_answer=len(no_answer),
            states_at_kill=dict(Counter(t.status.value for t in stored_now.values())),
            other_answers=len(other),
            succeeded=sum(t.status is TaskStatus.SUCCEEDED for t in finished.values()),
            attempts=dict(Counter(t.attempts for t in finished.values())),
        )
        assert answered <= set(stored_now), sorted(answered - set(stored_now))[:5]
        assert not other, [(a.status, a.body) for a in other[:5]]
        assert all(t.status is TaskStatus.SUCCEEDED for t in finished.values()), Counter(
            (t.status.value, t.error_kind) for t in finished.values()
        )
        out = dep.status(sorted(answered)[0])["output"]
        assert (
            out["task_status"] == "SUCCEEDED"
            and requests.get(out["video_url"], timeout=30).status_code == 200
        )
    store.close()


# --- 1,000 tasks through 4 workers ----------------------------------------------------------------------

MANY_TASKS = 1000


@pytest.mark.faults
@pytest.mark.timeout(1200)
def test_1000_tasks_through_4_workers(
    tmp_path: Path, pg_cluster: PostgresCluster, image_urls: list[str]
) -> None:
    url = fresh_database(pg_cluster)
    store = PostgresTaskStore(url)
    store.migrate()
    key, account = new_key(store, "many")
    storage_root = tmp_path / "storage"
    env = base_env(
        tmp_path,
        VIDEOSYNTH_DATABASE_URL=url,
        VIDEOSYNTH_STORAGE_URL=f"file://{storage_root}",
        VIDEOSYNTH_MAX_RUNNING_PER_ACCOUNT="4",
    )
    with deployment(env, tmp_path, key) as dep:
        dep.start_api(workers=0)
        workers = [dep.start_worker() for _ in range(4)]
        started = time.monotonic()
        cpu_before = {w.pid: cpu_seconds(w.pid) for w in workers}
        # Submitted by 8 clients at once while the workers already claim.
        answers: list[Answer] = []
        lock = threading.Lock()
        remaining = iter(range(MANY_TASKS))

        def client() -> None:
            with requests.Session() as s:
                while True:
                    with lock:
                        if next(remaining, None) is None:
                            return
                    a = exchange(s, "POST", dep.base_url + SUBMIT_PATH, key, json=submit_body(image_urls))
                    answers.append(a)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        submitted = time.monotonic()
        ids = [a.task_id for a in answers if a.task_id]
        assert len(ids) == MANY_TASKS, Counter(a.status for a in answers)
        tasks = wait_terminal(store, ids, timeout=1200)
        done = time.monotonic()
        stored = all_tasks(store, account)
        cpu = sum(cpu_seconds(w.pid) - cpu_before[w.pid] for w in workers)
        objects = sorted(p.relative_to(storage_root).as_posix() for p in (storage_root / "results").iterdir())
        partials = (
            list((storage_root / PARTIAL_DIR).iterdir()) if (storage_root / PARTIAL_DIR).exists() else []
        )
        by_worker = Counter(pid_of(t.worker_id) for t in tasks.values())
        listed = exchange(requests.Session(), "GET", f"{dep.base_url}/api/v1/tasks?status=SUCCEEDED", key)
        report(
            "1000_tasks",
            submitted=len(answers),
            answered_200=len(ids),
            found=len(tasks),
            lost=len(ids) - len(tasks),
            stored=len(stored),
            succeeded=sum(t.status is TaskStatus.SUCCEEDED for t in tasks.values()),
            run_twice=sum(t.attempts != 1 for t in tasks.values()),
            result_objects=len(objects),
            duplicate_objects=len(objects) - len({o.rsplit("-", 1)[0] for o in objects}),
            per_worker=sorted(by_worker.values()),
            submit_s=f"{submitted - started:.1f}",
            wall_s=f"{done - started:.1f}",
            tasks_per_s=f"{MANY_TASKS / (done - started):.2f}",
            worker_cpu_s_per_task=f"{cpu / MANY_TASKS:.3f}",
            listed_total=(listed.body or {}).get("total"),
        )
        assert len(tasks) == MANY_TASKS and set(stored) == set(ids)
        assert all(t.status is TaskStatus.SUCCEEDED for t in tasks.values()), Counter(
            (t.status.value, t.error_kind) for t in tasks.values()
        )
        # Exactly once: one attempt each, one object each (named by that attempt), nothing half-written.
        assert all(t.attempts == 1 for t in tasks.values())
        assert objects == sorted(f"results/{i}-1.mp4" for i in ids)
        assert objects == sorted(str(t.result_key) for t in tasks.values())
        assert partials == []
        # By the four workers, every one of which took part, and none of which died.
        assert set(by_worker) == {w.pid for w in workers}, by_worker
        assert all(w.poll() is None for w in workers), log_tail(dep)
        assert listed.status == 200 and (listed.body or {}).get("total") == MANY_TASKS
    store.close()
