"""Load benchmark: submit and query requests/s, p50 and p99 of our API against a bare FastAPI app.

For each store (SQLite, PostgreSQL) it starts the real server as a subprocess (`videosynth serve`: one
uvicorn worker, one embedded task worker, a temporary SQLite file or a throwaway PostgreSQL 15 cluster
on 127.0.0.1 started like the tests do, temporary storage) and the bare app of `bench/load_bare.py` (same
framework, same uvicorn settings, same JSON parsing, response bodies of the same shape) as another
subprocess, and drives both over loopback with `wrk`, an external load generator (Debian's package,
installed with apt-get if missing):

- submit: POST of the seed-style body (one reference image as an http URL on a loopback static server
  that this script runs, 720P 16:9, 3 s), `Authorization: Bearer` and `X-DashScope-Async: enable`;
- query: GET `/api/v1/tasks/{id}` rotating over tasks created (and finished) before the load.

Runs are interleaved, bare, ours, bare, ours ..., `--pairs` pairs for each of submit and query, after
one unmeasured warm-up run of each app; the printed figures are the medians over the pairs, and the
ratio is the median of the per-pair ratios ours/bare (this VM drifts by tens of per cent within minutes,
so only adjacent runs are compared). Latencies are wrk's (a `done()` hook prints its percentiles).

Submits under load queue thousands of tasks for the single embedded worker. The worker keeps rendering
them while the other runs go on (it shares the machine with both apps and wrk, during bare runs as much
as during ours), and the script prints how many tasks it finished during each run and at the end.

    .venv/bin/python bench/load.py                      # both stores, 10 s runs, wrk -t2 -c32, 3 pairs
    .venv/bin/python bench/load.py --store sqlite --duration 5
    .venv/bin/python bench/load.py --limits off           # per-client limits switched off
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py shadows the stdlib `queue` for scripts run from this directory: drop it from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import http.server
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SUBMIT = "/api/v1/services/aigc/video-generation/video-synthesis"
PROMPT = "[Image 1]中身着红色旗袍的女性站在老上海的街头，她手中的折扇缓缓打开。"
QUERY_TASKS = 8
# Per-client limits (issue 12). "on": every limit switched on, set above what one key sends here, so each
# request pays the limiter's full cost (rates counted in the store, the queue counted at every commit)
# and none is refused; "off": all 0, the limiter does nothing.
LIMITS = {
    "on": {
        "VIDEOSYNTH_SUBMIT_RPS": "1000000",
        "VIDEOSYNTH_QUERY_RPS": "1000000",
        "VIDEOSYNTH_MAX_QUEUED": "10000000",
        "VIDEOSYNTH_MAX_STORED_MB": "1000000",
    },
    "off": {
        "VIDEOSYNTH_SUBMIT_RPS": "0",
        "VIDEOSYNTH_QUERY_RPS": "0",
        "VIDEOSYNTH_MAX_QUEUED": "0",
        "VIDEOSYNTH_MAX_STORED_MB": "0",
    },
}
# Submit answers 200 and query must stay at or above these fractions of the bare app (issue 7).
TARGETS = {"sqlite": {"submit": 0.5, "query": 0.8}, "postgres": {"submit": 0.4, "query": 0.6}}

DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,'
    .. '"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it (apt-get update, apt-get install -y wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is still not on PATH after apt-get install")
    return found


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def submit_body(img_url: str) -> dict[str, object]:
    return {
        "model": "happyhorse-1.1-r2v",
        "input": {"prompt": PROMPT, "media": [{"type": "reference_image", "url": img_url}]},
        "parameters": {
            "resolution": "720P",
            "ratio": "16:9",
            "duration": 3,
            "watermark": False,
            "seed": 12345,
        },
    }


def submit_lua(body: str, key: str) -> str:
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {lua_string(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        'wrk.headers["X-DashScope-Async"] = "enable"\n' + DONE_LUA
    )


def query_lua(ids: list[str], key: str) -> str:
    # Each wrk thread has its own Lua state and counter; they start at different offsets.
    return (
        f"local ids = {{{', '.join(json.dumps(i) for i in ids)}}}\n"
        "local n = math.random(#ids)\n"
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        "request = function()\n"
        "  n = n % #ids + 1\n"
        '  return wrk.format("GET", "/api/v1/tasks/" .. ids[n])\n'
        "end\n" + DONE_LUA
    )


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    detail: str
    cpu_us: float = 0.0  # the server process's CPU time (user + system, its own threads only) per request
    requests: int = 0  # answered requests (all 2xx, or the run fails)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (all its threads, not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    wrk: str, script: Path, url: str, args: argparse.Namespace, duration: float, pid: int | None = None
) -> WrkResult:
    cmd = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    cpu = cpu_seconds(pid) - cpu0 if pid else 0.0
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("WRKJSON ") :])
    errors = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    detail = ", ".join(f"{k} {r[k]}" for k in ("status", "connect", "read", "write", "timeout") if r[k])
    rps = r["requests"] / (r["duration_us"] / 1e6)
    cpu_us = cpu / max(1, r["requests"]) * 1e6
    return WrkResult(rps, r["p50_us"] / 1000, r["p99_us"] / 1000, errors, detail, cpu_us, r["requests"])


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):  # type: ignore[no-untyped-def]
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def wait_healthy(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{proc.args} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def count(base: str, headers: dict[str, str], status: str | None) -> int:
    params: dict[str, str | int] = {"page_size": 1, **({"status": status} if status else {})}
    r = requests.get(f"{base}/api/v1/tasks", params=params, headers=headers, timeout=30)
    r.raise_for_status()
    return int(r.json()["total"])


def open_resources(pid: int, database_url: str) -> str:
    """The server process's open file descriptors, and its PostgreSQL connections where it has any."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    if not database_url.startswith("postgresql"):
        return f"{fds} open fds"
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return f"{fds} open fds, {row[0] if row else '?'} PostgreSQL connections"


def shape(value: object) -> object:
    """The key structure of a JSON body, for checking that the bare app answers in our shape."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    return type(value).__name__


def bench_store(
    store: str, database_url: str, tmp: Path, img_url: str, wrk: str, args: argparse.Namespace
) -> None:
    key = "sk-" + os.urandom(24).hex()  # the shape of a real key
    ours_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "VIDEOSYNTH_DATABASE_URL": database_url,
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp / "work"),
        "VIDEOSYNTH_API_KEYS": key,
        "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE": "1",
        "VIDEOSYNTH_WORKERS": "1",
        "VIDEOSYNTH_TIMEZONE": "UTC",
        **LIMITS[args.limits],
    }
    bin_dir = Path(sys.executable).parent
    ours_log, bare_log = tmp / f"{store}-server.log", tmp / f"{store}-bare.log"
    with open(ours_log, "wb") as ours_err, open(bare_log, "wb") as bare_err:
        # The children hold their own copies of the log descriptors, so ours can close here.
        ours = subprocess.Popen(
            [str(bin_dir / "videosynth"), "serve", "--port", str(ours_port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=ours_err,
        )
        bare = subprocess.Popen(
            [sys.executable, str(BENCH / "load_bare.py"), "--port", str(bare_port)],
            stdout=subprocess.DEVNULL,
            stderr=bare_err,
        )
    urls = {"ours": f"http://127.0.0.1:{ours_port}", "bare": f"http://127.0.0.1:{bare_port}"}
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    try:
        wait_healthy(urls["ours"], ours, ours_log)
        wait_healthy(urls["bare"], bare, bare_log)
        print(
            f"\n== {store}: ours pid {ours.pid} ({urls['ours']}), bare pid {bare.pid} ({urls['bare']})",
            flush=True,
        )
        body = submit_body(img_url)
        ids = []
        for _ in range(QUERY_TASKS):
            r = requests.post(urls["ours"] + SUBMIT, json=body, headers=headers, timeout=30)
            r.raise_for_status()
            ids.append(r.json()["output"]["task_id"])
        deadline = time.monotonic() + 120
        answers: dict[str, dict[str, object]] = {}
        while len(answers) < len(ids):
            for task_id in ids:
                out = requests.get(
                    f"{urls['ours']}/api/v1/tasks/{task_id}", headers=headers, timeout=30
                ).json()
                status = out["output"]["task_status"]
                if status == "SUCCEEDED":
                    answers[task_id] = out
                elif status not in ("PENDING", "RUNNING"):
                    raise SystemExit(f"query task ended {out}")
            if time.monotonic() > deadline:
                raise SystemExit("the query tasks did not finish within 120 s")
            time.sleep(0.2)
        # The bare app must answer in our shape, or the comparison would not be fair.
        bare_submit = requests.post(urls["bare"] + SUBMIT, json=body, headers=headers, timeout=30).json()
        ours_submit = requests.post(urls["ours"] + SUBMIT, json=body, headers=headers, timeout=30).json()
        bare_query = requests.get(f"{urls['bare']}/api/v1/tasks/{ids[0]}", headers=headers, timeout=30).json()
        assert shape(bare_submit) == shape(ours_submit), (bare_submit, ours_submit)
        assert shape(bare_query) == shape(answers[ids[0]]), (bare_query, answers[ids[0]])
        print(
            f"query body: ours {len(json.dumps(answers[ids[0]]))} B, bare {len(json.dumps(bare_query))} B (JSON)"
        )

        scripts = {"submit": tmp / "submit.lua", "query": tmp / "query.lua"}
        scripts["submit"].write_text(submit_lua(json.dumps(body, ensure_ascii=False), key))
        scripts["query"].write_text(query_lua(ids, key))
        paths = {"submit": SUBMIT, "query": f"/api/v1/tasks/{ids[0]}"}
        pids = {"ours": ours.pid, "bare": bare.pid}
        results: dict[tuple[str, str], list[WrkResult]] = {}
        tasks_before = count(urls["ours"], headers, None)
        answered_submits = 0
        for kind in ("submit", "query"):
            for app in ("bare", "ours"):  # warm-up, unmeasured
                warm = run_wrk(wrk, scripts[kind], urls[app] + paths[kind], args, min(2.0, args.duration))
                if (kind, app) == ("submit", "ours"):
                    answered_submits += warm.requests
            for pair in range(args.pairs):
                for app in ("bare", "ours"):
                    before = count(urls["ours"], headers, "SUCCEEDED")
                    result = run_wrk(
                        wrk, scripts[kind], urls[app] + paths[kind], args, args.duration, pids[app]
                    )
                    finished = count(urls["ours"], headers, "SUCCEEDED") - before
                    results.setdefault((kind, app), []).append(result)
                    if (kind, app) == ("submit", "ours"):
                        answered_submits += result.requests
                    if result.errors:
                        raise SystemExit(
                            f"{kind} {app}: {result.errors} failed requests under load ({result.detail}; status ="
                            " non-2xx/3xx answers, timeout = none within 10 s)"
                        )
                    print(
                        f"  {kind:6} pair {pair + 1} {app:4}: {result.rps:7.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                        f"  p99 {result.p99_ms:6.2f} ms  cpu {result.cpu_us:5.0f} us/req   worker finished"
                        f" {finished:2d} tasks during the run; ours: {open_resources(ours.pid, database_url)}",
                        flush=True,
                    )
        # Every answered submit must be in the store (wrk does not count requests cut off at its end, which
        # the server may still have stored, so there can be a few more).
        stored = count(urls["ours"], headers, None) - tasks_before
        print(f"  submits: {answered_submits} answered 200 under load, {stored} stored")
        if stored < answered_submits:
            raise SystemExit("answered submits are missing from the store")
        time.sleep(5)
        after = count(urls["ours"], headers, "SUCCEEDED")
        time.sleep(5)
        succeeded = count(urls["ours"], headers, "SUCCEEDED")
        pending, failed = count(urls["ours"], headers, "PENDING"), count(urls["ours"], headers, "FAILED")
        print(
            f"  worker after the load: {succeeded - after} tasks SUCCEEDED in 5 s; {succeeded} SUCCEEDED, "
            f"{pending} PENDING (the submit backlog), {failed} FAILED in all"
        )
        if succeeded - after <= 0 or failed:
            raise SystemExit("the embedded worker is not finishing tasks")

        print(
            f"\n{store}: medians of {args.pairs} pairs, wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s"
        )
        print(f"{'endpoint':8} {'app':5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU us/req':>18}")
        for kind in ("submit", "query"):
            bare_runs, ours_runs = results[(kind, "bare")], results[(kind, "ours")]
            for app, runs in (("bare", bare_runs), ("ours", ours_runs)):
                print(
                    f"{kind:8} {app:5} {statistics.median(r.rps for r in runs):8.0f}"
                    f" {statistics.median(r.p50_ms for r in runs):8.2f}"
                    f" {statistics.median(r.p99_ms for r in runs):8.2f}"
                    f" {statistics.median(r.cpu_us for r in runs):18.0f}"
                )
            ratios = [o.rps / b.rps for o, b in zip(ours_runs, bare_runs, strict=True)]
            p50s = [o.p50_ms / b.p50_ms for o, b in zip(ours_runs, bare_runs, strict=True)]
            p99s = [o.p99_ms / b.p99_ms for o, b in zip(ours_runs, bare_runs, strict=True)]
            cpus = [o.cpu_us / b.cpu_us for o, b in zip(ours_runs, bare_runs, strict=True) if b.cpu_us]
            target = TARGETS[store][kind]
            ratio = statistics.median(ratios)
            print(
                f"{kind:8} ours/bare: req/s {ratio:.2f} [{' '.join(f'{r:.2f}' for r in ratios)}]"
                f" (target >= {target}: {'met' if ratio >= target else 'NOT met'}),"
                f" p50 {statistics.median(p50s):.2f}x, p99 {statistics.median(p99s):.2f}x,"
                f" server CPU per request {statistics.median(cpus) if cpus else float('nan'):.2f}x"
            )
    except BaseException:
        print(f"--- {ours_log.name} (tail)\n{ours_log.read_text()[-4000:]}", flush=True)
        raise
    finally:
        stop(bare)
        stop(ours)
        if args.keep_logs:
            for log in (ours_log, bare_log):
                print(f"--- {log.name}\n{log.read_text()[-4000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--store", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--keep-logs", action="store_true", help="print the tail of both servers' logs")
    parser.add_argument(
        "--limits", choices=sorted(LIMITS), default="on", help="per-client limits on (not binding) or off"
    )
    args = parser.parse_args()
    stores = [s.strip() for s in args.store.split(",") if s.strip()]
    for s in stores:
        if s not in TARGETS:
            raise SystemExit(f"unknown store {s!r} (sqlite, postgres)")
    wrk = ensure_wrk()
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    print(
        f"machine: {os.cpu_count()} cores ({cpu}); {wrk_version.split(' Copyright')[0]}; limits {args.limits}"
    )
    with tempfile.TemporaryDirectory(prefix="vs-load-") as tmp_s:
        tmp = Path(tmp_s)
        www = tmp / "www"
        www.mkdir()
        Image.new("RGB", (1280, 720), (180, 30, 40)).save(www / "ref.jpg", quality=90)
        with static_server(www) as img_base:
            for store in stores:
                run_dir = tmp / store
                run_dir.mkdir()
                if store == "sqlite":
                    bench_store(
                        store, f"sqlite:///{run_dir / 'db.sqlite'}", run_dir, f"{img_base}/ref.jpg", wrk, args
                    )
                    continue
                sys.path.insert(0, str(ROOT / "tests"))
                from services import PostgresCluster, fresh_database

                class Cluster(PostgresCluster):
                    def start(self) -> None:
                        # As the tests' cluster (fsync off), but with room for the server's leaked connections
                        # (see `connections` in the output): the tests' 200 run out after ~5 runs of ours.
                        self._run(
                            str(self.bin / "initdb"),
                            "-D",
                            str(self.data),
                            "-U",
                            self.user,
                            "--auth=trust",
                            "-E",
                            "UTF8",
                            "--no-sync",
                        )
                        opts = (
                            f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.root} -c fsync=off"
                            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=1000"
                        )
                        self._run(
                            str(self.bin / "pg_ctl"),
                            "-D",
                            str(self.data),
                            "-l",
                            str(self.root / "log"),
                            "-o",
                            opts,
                            "-w",
                            "start",
                        )

                cluster = Cluster()
                cluster.start()
                try:
                    bench_store(store, fresh_database(cluster), run_dir, f"{img_base}/ref.jpg", wrk, args)
                finally:
                    cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
