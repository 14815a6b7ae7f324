"""The command-line client (``videosynth submit`` / ``videosynth tasks``) against a real server on loopback:
a real uvicorn, SQLite, worker and animatic engine; the CLI run for real, as a subprocess or in-process."""

from __future__ import annotations

import itertools
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest
import requests

from conftest import ImageServer, LiveServer, free_socket, make_key, write_image
from videosynth.cli import main
from videosynth.client import ClientError, normalise_base_url
from videosynth.sizes import FPS, frame_size
from videosynth.tasks.models import TaskStatus

VIDEOSYNTH = Path(sys.executable).with_name("videosynth")
TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SIGNATURE = re.compile(r"(?i)(\bsignature=)[^&\s\"']+")
_runs = itertools.count()


def client_env(server: LiveServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update({"DASHSCOPE_API_KEY": server.key, "DASHSCOPE_HTTP_BASE_URL": server.api, **extra})
    return env


def _keep_log(tmp_path: Path, args: list[str], stdout: str, stderr: str) -> None:
    # Under the session's temp dir, where the suite-wide secret check (conftest.py) searches *.log files.
    # Masked: the command line's own --api-key, and the signed video link stdout is there to give (the
    # answer, not a log); stderr, the CLI's log, is kept as it is.
    shown = ["***" if i and args[i - 1] == "--api-key" else arg for i, arg in enumerate(args)]
    answer = SIGNATURE.sub(r"\1***", stdout)
    log = tmp_path / f"cli-client-{next(_runs)}.log"
    log.write_text(f"$ videosynth {' '.join(shown)}\n--- stdout\n{answer}\n--- stderr\n{stderr}\n")


def run_client(
    args: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(VIDEOSYNTH), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    _keep_log(tmp_path, args, done.stdout, done.stderr)
    return done


def run_inline(args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[int, str, str]:
    """The CLI in this process, as ``videosynth ARGS`` (the environment's DASHSCOPE_* variables apply)."""
    code = main(args)
    captured = capsys.readouterr()
    _keep_log(tmp_path, args, captured.out, captured.err)
    return code, captured.out, captured.err


@pytest.fixture
def sdk_env(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    """The SDK's variables pointing the in-process CLI at the live server."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", live_server.key)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", live_server.api)
    return live_server


def submit_pending(capsys: pytest.CaptureFixture[str], tmp_path: Path, image_server: ImageServer) -> str:
    """A task that stays PENDING (the tests using it run no worker)."""
    if not (image_server.root / "p.png").exists():
        write_image(image_server.root / "p.png", 640, 480)
    code, out, err = run_inline(
        ["submit", "--image", image_server.url("p.png"), "--prompt", "[Image 1] waits", "--duration", "3"],
        capsys,
        tmp_path,
    )
    assert code == 0, err
    assert TASK_ID.match(out.strip()), out
    return out.strip()


def probe(path: Path) -> tuple[int, int, int, str]:
    with av.open(str(path)) as container:
        assert "mp4" in container.format.name.split(",")
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, frames, stream.codec_context.name


# --- submit --wait -o: the acceptance run -------------------------------------------------------------------


def test_submit_two_local_images_waits_and_writes_the_requested_size(
    live_server: LiveServer, worker: object, tmp_path: Path
) -> None:
    a = write_image(tmp_path / "a.jpg", 640, 480, seed=1, fmt="JPEG")
    b = write_image(tmp_path / "b.png", 480, 640, seed=2)
    out = tmp_path / "out.mp4"
    args = ["submit", "--image", str(a), "--image", str(b), "--prompt", "[Image 1] walks. [Image 2] waves.",
            "--resolution", "480P", "--ratio", "9:16", "--duration", "3", "--seed", "7", "--no-watermark",
            "--wait", "-o", str(out)]  # fmt: skip
    done = run_client(args, client_env(live_server), tmp_path)
    assert done.returncode == 0, done.stderr
    task_id, video_url = done.stdout.split()
    assert TASK_ID.match(task_id)
    assert video_url.startswith(live_server.base_url + "/files/")
    assert probe(out) == (*frame_size("480P", "9:16"), 3 * FPS, "h264")
    # The local files went through the upload flow; the parameters arrived as given.
    task = live_server.store.get(task_id)
    assert task is not None and task.status is TaskStatus.SUCCEEDED
    uploaded = sorted(live_server.storage.list_keys("uploads/"), key=lambda k: k.rsplit("/", 1)[1])
    assert [k.rsplit("/", 1)[1] for k in uploaded] == ["a.jpg", "b.png"]
    for key, source in zip(uploaded, (a, b), strict=True):
        assert live_server.storage.read_bytes(key, 10**8) == source.read_bytes()
    assert (task.params.resolution, task.params.ratio, task.params.duration) == ("480P", "9:16", 3)
    assert (task.params.seed, task.params.watermark) == (7, False)
    # Not a terminal: a line per change, no carriage returns; the uploads and the save are reported.
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == f"uploading {a} ({a.stat().st_size} bytes)"
    assert any(line.startswith("SUCCEEDED") and " 100%" in line for line in lines), done.stderr
    assert lines[-1] == f"saved {out} ({out.stat().st_size} bytes)"
    assert live_server.key not in done.stdout + done.stderr


def test_an_http_image_url_is_sent_as_it_is_and_a_terminal_gets_the_bar(
    live_server: LiveServer, worker: object, image_server: ImageServer, tmp_path: Path
) -> None:
    write_image(image_server.root / "ref.webp", 800, 600, fmt="WEBP")
    url = image_server.url("ref.webp")
    # stderr on a pseudo-terminal: the one-line bar, redrawn with \r.
    leader, follower = pty.openpty()
    args = ["submit", "--image", url, "--prompt", "[Image 1] turns", "--resolution", "480P", "--ratio", "1:1",
            "--duration", "3", "--wait"]  # fmt: skip
    proc = subprocess.Popen(
        [str(VIDEOSYNTH), *args],
        env=client_env(live_server),
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    return
                continue
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the follower side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=120)
    reader.join(10)
    os.close(leader)
    tty = b"".join(chunks).decode()
    _keep_log(tmp_path, args, stdout, tty)
    assert proc.returncode == 0, tty
    _, video_url = stdout.split()
    assert "\r" in tty
    last = tty.replace("\r\n", "\n").split("\r")[-1].strip()
    assert re.fullmatch(r"SUCCEEDED\s+\[#{24}\]\s+100%\s+\S+", last), repr(last)
    # The URL went to the server as it is: the worker fetched it, nothing was uploaded.
    assert "/ref.webp" in image_server.hits
    assert live_server.storage.list_keys("uploads/") == []
    assert requests.get(video_url, timeout=30).status_code == 200


def test_a_failed_task_exits_1_with_its_code_and_message(
    sdk_env: LiveServer, worker: object, image_server: ImageServer, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:  # fmt: skip
    code, out, err = run_inline(
        ["submit", "--image", image_server.url("missing.png"), "--prompt", "[Image 1]", "--wait",
         "--progress", "none"],
        capsys, tmp_path,
    )  # fmt: skip
    assert code == 1, err
    task_id = out.strip()
    assert TASK_ID.match(task_id)
    assert re.search(rf"task {task_id} FAILED: \S+: .+", err), err
    # --json: the raw bodies, one a line.
    code, out, _ = run_inline(["tasks", "wait", task_id, "--json"], capsys, tmp_path)
    assert code == 1
    body = json.loads(out)
    assert body["output"]["task_status"] == "FAILED" and body["output"]["code"]


# --- refusals, cancel, timeout, interrupt (no worker: tasks stay PENDING) ------------------------------------


@pytest.mark.parametrize(
    ("extra", "prompt", "code_shown"),
    [
        ([], "[Image 1] and [Image 3]", "InvalidParameter"),
        (["--ratio", "7:3"], "[Image 1]", "InvalidParameter"),
        (["--model", "no-such-model"], "[Image 1]", "InvalidParameter"),
    ],
)
def test_a_refused_submit_exits_5_with_code_message_and_request_id(
    sdk_env: LiveServer,
    image_server: ImageServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    extra: list[str],
    prompt: str,
    code_shown: str,
) -> None:
    write_image(image_server.root / "r.png", 640, 480)
    images = ["--image", image_server.url("r.png"), "--image", image_server.url("r.png")]
    code, out, err = run_inline(["submit", *images, "--prompt", prompt, *extra], capsys, tmp_path)
    assert code == 5, err
    assert out == ""
    assert re.search(rf"refused: HTTP 400 {code_shown}: .+ \(request_id [0-9a-f-]+\)", err), err
    listed = requests.get(f"{sdk_env.api}/tasks", headers=sdk_env.headers(), timeout=10).json()
    assert listed["total"] == 0  # refused before any task was made


def test_a_task_canceled_while_waiting_exits_3(
    sdk_env: LiveServer, image_server: ImageServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live_server = sdk_env
    task_id = submit_pending(capsys, tmp_path, image_server)
    proc = subprocess.Popen(
        [str(VIDEOSYNTH), "tasks", "wait", task_id],
        env=client_env(live_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the wait has begun: it saw the task PENDING
    assert first.startswith("PENDING") and "queued" in first, first
    r = requests.post(f"{live_server.api}/tasks/{task_id}/cancel", headers=live_server.headers(), timeout=10)
    assert r.status_code == 200, r.text
    stdout, rest = proc.communicate(timeout=60)
    _keep_log(tmp_path, ["tasks", "wait", task_id], stdout, first + rest)
    assert proc.returncode == 3, rest
    assert f"task {task_id} was CANCELED" in rest
    assert stdout == ""


def test_timeout_exits_4_and_leaves_the_task_alone(
    sdk_env: LiveServer, image_server: ImageServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_image(image_server.root / "t.png", 640, 480)
    args = [
        "submit",
        "--image",
        image_server.url("t.png"),
        "--prompt",
        "[Image 1]",
        "--wait",
        "--timeout",
        "1.5",
    ]
    code, out, err = run_inline([*args, "--progress", "bar"], capsys, tmp_path)
    assert code == 4, err
    task_id = out.strip()
    # The bar, redrawn in place; the line is ended before the message.
    drawn = err.split("\n")[0].split("\r")
    assert drawn[0] == "" and len(drawn) >= 2, repr(err)
    assert all(re.fullmatch(r"PENDING\s+queued\s+\[-{24}\]\s+0%\s+\d+s\s*", d) for d in drawn[1:]), repr(err)
    assert "timed out: still unfinished after 1.5 s" in err
    assert f"videosynth tasks wait {task_id}" in err
    assert sdk_env.query(task_id)["output"]["task_status"] == "PENDING"
    code, _, err = run_inline(["tasks", "wait", task_id, "--timeout", "0.2"], capsys, tmp_path)
    assert code == 4, err


def test_ctrl_c_stops_waiting_prints_the_id_and_does_not_cancel(
    sdk_env: LiveServer, image_server: ImageServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live_server = sdk_env
    task_id = submit_pending(capsys, tmp_path, image_server)
    proc = subprocess.Popen(
        [str(VIDEOSYNTH), "tasks", "wait", task_id],
        env=client_env(live_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("PENDING"), first
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=30)
    _keep_log(tmp_path, ["tasks", "wait", task_id], stdout, first + rest)
    assert proc.returncode == 130, rest
    assert f"resume with: videosynth tasks wait {task_id}" in rest
    assert "Traceback" not in rest
    assert live_server.query(task_id)["output"]["task_status"] == "PENDING"


# --- tasks list / get / cancel ------------------------------------------------------------------------------


def test_tasks_list_get_cancel(
    sdk_env: LiveServer, image_server: ImageServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = submit_pending(capsys, tmp_path, image_server)
    second = submit_pending(capsys, tmp_path, image_server)

    code, out, err = run_inline(["tasks", "list"], capsys, tmp_path)
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].split() == ["TASK_ID", "STATUS", "MODEL", "CREATED", "ENDED"]
    listed = {row.split()[0]: row.split()[1:3] for row in rows[1:]}
    assert listed == {first: ["PENDING", "happyhorse-1.0-r2v"], second: ["PENDING", "happyhorse-1.0-r2v"]}
    assert "page 1 of 1; 2 task(s) in all" in err

    code, out, _ = run_inline(
        ["tasks", "list", "--page-size", "1", "--page", "2", "--json"], capsys, tmp_path
    )
    page = json.loads(out)
    assert (page["total"], page["total_page"], page["page_no"], page["page_size"]) == (2, 2, 2, 1)
    assert len(page["data"]) == 1
    code, out, _ = run_inline(["tasks", "list", "--status", "succeeded"], capsys, tmp_path)
    assert code == 0 and out.splitlines()[1:] == []
    code, out, _ = run_inline(["tasks", "list", "--model", "happyhorse-1.1-r2v"], capsys, tmp_path)
    assert code == 0 and out.splitlines()[1:] == []

    code, out, _ = run_inline(["tasks", "get", first], capsys, tmp_path)
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert (fields["task_id"], fields["task_status"], fields["stage"]) == (first, "PENDING", "queued")
    assert fields["progress"] == "0%" and fields["orig_prompt"] == "[Image 1] waits"

    code, out, err = run_inline(["tasks", "cancel", first], capsys, tmp_path)
    assert (code, out.strip()) == (0, f"{first} CANCELED"), err
    code, out, err = run_inline(["tasks", "cancel", first], capsys, tmp_path)
    assert code == 5 and out == ""
    assert "refused: HTTP 400 UnsupportedOperation: Failed to cancel the task" in err
    code, _, err = run_inline(["tasks", "wait", first], capsys, tmp_path)
    assert code == 3 and f"task {first} was CANCELED" in err

    nobody = "00000000-0000-4000-8000-000000000000"
    code, out, _ = run_inline(["tasks", "get", nobody], capsys, tmp_path)
    assert code == 7 and "UNKNOWN" in out
    code, _, err = run_inline(["tasks", "wait", nobody], capsys, tmp_path)
    assert code == 7 and "UNKNOWN" in err
    # Another account's task is as unknown as a missing one.
    other = make_key(sdk_env.store, "other")
    code, _, _ = run_inline(["tasks", "get", second, "--api-key", other], capsys, tmp_path)
    assert code == 7


# --- configuration: the SDK's variables, the flags, the base URL ----------------------------------------------


def test_the_sdks_variables_and_the_flags(
    live_server: LiveServer, image_server: ImageServer, tmp_path: Path
) -> None:
    # The variables alone, with a base URL without /api/v1 (the server's own URL).
    done = run_client(["tasks", "list"], client_env(live_server, DASHSCOPE_HTTP_BASE_URL=live_server.base_url),
                      tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TASK_ID", "STATUS", "MODEL", "CREATED", "ENDED"]
    # The flags win over the variables.
    env = client_env(
        live_server, DASHSCOPE_API_KEY="sk-wrong", DASHSCOPE_HTTP_BASE_URL="http://127.0.0.1:9/x"
    )
    done = run_client(["tasks", "list", "--base-url", live_server.base_url + "/", "--api-key", live_server.key],
                      env, tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # A wrong key is a refusal; no key at all is a usage error, before any request.
    done = run_client(["tasks", "list"], client_env(live_server, DASHSCOPE_API_KEY="sk-wrong"), tmp_path)
    assert done.returncode == 5
    assert "refused: HTTP 401 InvalidApiKey: Invalid API-key provided." in done.stderr
    env = client_env(live_server)
    del env["DASHSCOPE_API_KEY"]
    write_image(tmp_path / "k.png", 640, 480)
    done = run_client(["submit", "--image", str(tmp_path / "k.png"), "--prompt", "x"], env, tmp_path)
    assert done.returncode == 2
    assert "no API key: set DASHSCOPE_API_KEY or give --api-key" in done.stderr
    # argparse's own usage errors, and the client's.
    assert run_client(["submit", "--prompt", "x"], client_env(live_server), tmp_path).returncode == 2
    done = run_client(["submit", "--image", str(tmp_path / "nope.png"), "--prompt", "x"],
                      client_env(live_server), tmp_path)  # fmt: skip
    assert done.returncode == 2 and "no such file" in done.stderr
    done = run_client(["submit", "--image", str(tmp_path / "k.png"), "--prompt", "x", "-o",
                       str(tmp_path / "no" / "dir.mp4")], client_env(live_server), tmp_path)  # fmt: skip
    assert done.returncode == 2 and "no directory" in done.stderr
    too_many = [arg for _ in range(10) for arg in ("--image", image_server.url("x.png"))]
    done = run_client(["submit", *too_many, "--prompt", "x"], client_env(live_server), tmp_path)
    assert done.returncode == 2 and "at most 9" in done.stderr
    assert live_server.key not in "".join(p.read_text() for p in tmp_path.glob("cli-client-*.log"))


def test_help_lists_the_exit_codes(tmp_path: Path) -> None:
    for command in (["submit"], ["tasks"], ["tasks", "wait"]):
        done = subprocess.run(
            [str(VIDEOSYNTH), *command, "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0
        for code in ("0", "1", "2", "3", "4", "5", "6", "7", "130"):
            assert re.search(rf"^\s+{code}\s+\S", done.stdout, re.MULTILINE), (command, code)


def test_an_unreachable_server_exits_6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    code, _, err = run_inline(
        ["tasks", "get", "x", "--base-url", f"127.0.0.1:{port}", "--api-key", "sk-any"], capsys, tmp_path
    )
    assert code == 6
    assert f"server unavailable: could not reach http://127.0.0.1:{port} for the query" in err


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/api/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/api/v1"),
        ("http://127.0.0.1:8000/api/v1", "http://127.0.0.1:8000/api/v1"),
        ("http://127.0.0.1:8000/api/v1/", "http://127.0.0.1:8000/api/v1"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000/api/v1"),
        ("https://gateway.example/dashscope/api/v1", "https://gateway.example/dashscope/api/v1"),
        (" https://dashscope.aliyuncs.com/api/v1 ", "https://dashscope.aliyuncs.com/api/v1"),
    ],
)
def test_base_url_normalisation(given: str, base: str) -> None:
    assert normalise_base_url(given) == base


@pytest.mark.parametrize("given", ["", "ftp://host/api/v1", "http://"])
def test_base_url_refused(given: str) -> None:
    with pytest.raises(ValueError):
        normalise_base_url(given)


def test_client_error_describes_itself() -> None:
    refused = ClientError("Model not exist.", status=400, code="InvalidParameter", request_id="r-1")
    assert (
        refused.refused
        and refused.describe() == "HTTP 400 InvalidParameter: Model not exist. (request_id r-1)"
    )
    assert not ClientError("down", status=503).refused
    assert not ClientError("could not reach").refused
