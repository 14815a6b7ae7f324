"""``videosynth webhooks``, ``videosynth tasks deliveries|redeliver`` and ``submit --callback-url`` against a
real server on loopback (uvicorn, SQLite, and a worker where a task must move); the CLI run as a subprocess.

No delivery is sent anywhere: the live server runs no delivery pump, so the webhooks' example.com URLs are only
stored, and their deliveries stay pending with no try."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import LiveServer, make_key, write_image

TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
WEBHOOK_ID = re.compile(r"^wh_[0-9a-f]{32}$")
SECRET = re.compile(r"^whsec_\S+$")
WIRE_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?"
# What the logs must not show (conftest.py's secret check): a signed link's signature, a webhook secret.
MASKED = re.compile(r"(?i)(\bsignature=|\bwhsec_)[^&\s\"']+")
HOOK_URL = "https://hooks.example.com/x"
CALLBACK_URL = "https://cb.example.com/y"
_runs = itertools.count()


def client_env(server: LiveServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update({"DASHSCOPE_API_KEY": server.key, "DASHSCOPE_HTTP_BASE_URL": server.api, **extra})
    return env


def run_cli(
    args: list[str], env: dict[str, str], tmp_path: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``videosynth ARGS`` as a subprocess; its output kept in a *.log under the session's temp dir, where the
    suite-wide secret check (conftest.py) searches. Masked there: the command line's --api-key, and on stdout
    what it is there to give (the video's signed link, the webhook secret); stderr, the CLI's log, is kept
    as it is."""
    done = subprocess.run(
        [sys.executable, "-m", "videosynth", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    shown = ["***" if i and args[i - 1] == "--api-key" else arg for i, arg in enumerate(args)]
    log = tmp_path / f"cli-webhooks-{next(_runs)}.log"
    answer = MASKED.sub(r"\1***", done.stdout)
    log.write_text(f"$ videosynth {' '.join(shown)}\n--- stdout\n{answer}\n--- stderr\n{done.stderr}\n")
    return done


def ok(args: list[str], env: dict[str, str], tmp_path: Path) -> str:
    done = run_cli(args, env, tmp_path)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    lines = stdout.splitlines()
    return lines[0].split(), [line.split() for line in lines[1:]]


# --- webhooks add / list / remove ---------------------------------------------------------------------------


def test_add_list_and_remove_webhooks(live_server: LiveServer, tmp_path: Path) -> None:
    env = client_env(live_server)
    # The defaults: standard, every event.
    line = ok(["webhooks", "add", HOOK_URL], env, tmp_path).strip()
    first, url, fmt, events = line.split()
    assert WEBHOOK_ID.match(first) and url == HOOK_URL
    assert (fmt, events) == ("format=standard", "events=running,succeeded,failed,canceled")
    # The hosted service's event body, some events (in any order and case), no result.
    line = ok(
        ["webhooks", "add", "https://hooks.example.com/ds", "--format", "dashscope-event",
         "--events", "FAILED, succeeded", "--no-result"],
        env, tmp_path,
    ).strip()  # fmt: skip
    second, url, fmt, events, result = line.split()
    assert (url, fmt, events, result) == (
        "https://hooks.example.com/ds", "format=dashscope-event", "events=succeeded,failed", "result=off"
    )  # fmt: skip
    # --json: the answer body, as the server gave it.
    out = ok(
        ["webhooks", "add", "https://hooks.example.com/r", "--events", "running", "--json"], env, tmp_path
    )
    body = json.loads(out)
    third = body["output"]["webhook_id"]
    assert body["request_id"] and WEBHOOK_ID.match(third)
    assert {k: v for k, v in body["output"].items() if k not in ("webhook_id", "created_at")} == {
        "url": "https://hooks.example.com/r",
        "events": ["running"],
        "format": "standard",
        "include_result": True,
    }
    assert re.fullmatch(WIRE_TIME, body["output"]["created_at"])

    done = run_cli(["webhooks", "list"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    header, rows = table(done.stdout)
    assert header == ["WEBHOOK_ID", "FORMAT", "EVENTS", "URL"]
    assert sorted(rows) == sorted(
        [
            [first, "standard", "running,succeeded,failed,canceled", HOOK_URL],
            [second, "dashscope-event", "succeeded,failed", "https://hooks.example.com/ds"],
            [third, "standard", "running", "https://hooks.example.com/r"],
        ]
    )
    assert "3 webhook(s)" in done.stderr
    listed = json.loads(ok(["webhooks", "list", "--json"], env, tmp_path))["output"]["webhooks"]
    assert {h["webhook_id"]: h["include_result"] for h in listed} == {first: True, second: False, third: True}

    # Another account sees none of them and cannot remove them.
    other = make_key(live_server.store, "other")
    out = ok(["webhooks", "list", "--api-key", other], env, tmp_path)
    assert table(out)[1] == []
    done = run_cli(["webhooks", "remove", first, "--api-key", other], env, tmp_path)
    assert done.returncode == 5, done.stderr

    assert ok(["webhooks", "remove", first], env, tmp_path).strip() == f"{first} removed"
    _, rows = table(ok(["webhooks", "list"], env, tmp_path))
    assert sorted(row[0] for row in rows) == sorted([second, third])
    body = json.loads(ok(["webhooks", "remove", third, "--json"], env, tmp_path))
    assert body["output"] == {"webhook_id": third, "deleted": True}

    # An unknown (or already removed) webhook: refused, with the server's words.
    done = run_cli(["webhooks", "remove", first], env, tmp_path)
    assert done.returncode == 5
    assert done.stdout == ""
    assert re.search(r"refused: HTTP 404 NotFound: .+ \(request_id \S+\)", done.stderr), done.stderr
    assert live_server.key not in done.stdout + done.stderr


def test_webhooks_the_server_refuses_exit_5_and_bad_arguments_exit_2(
    live_server: LiveServer, tmp_path: Path
) -> None:
    env = client_env(live_server)
    for args, words in (
        (["ftp://hooks.example.com/x"], "only http and https URLs are accepted"),
        (["not a url"], "InvalidParameter"),
        (["https://user:pw@hooks.example.com/"], "user name or password"),
        ([HOOK_URL, "--events", "started"], "unknown event 'started'"),
        ([HOOK_URL, "--format", "dashscope-event", "--events", "running"], "not sent in this format"),
        ([HOOK_URL, "--no-result"], "dashscope-event format only"),
    ):
        done = run_cli(["webhooks", "add", *args], env, tmp_path)
        assert done.returncode == 5, (args, done.stderr)
        assert done.stdout == ""
        assert "refused: HTTP 400 InvalidParameter: " in done.stderr and words in done.stderr, done.stderr
    for args in (
        ["webhooks", "add", HOOK_URL, "--format", "xml"],
        ["webhooks", "add", HOOK_URL, "--events", " , "],
        ["webhooks", "add"],
        ["webhooks"],
        ["webhooks", "secret", "--overlap", "60"],
        ["webhooks", "secret", "--rotate", "--overlap", "-1"],
        ["webhooks", "secret", "--rotate", "--overlap", "604801"],
        ["tasks", "redeliver", "only-a-task-id"],
    ):
        done = run_cli(args, env, tmp_path)
        assert done.returncode == 2, (args, done.stderr)
    no_key = {k: v for k, v in env.items() if k != "DASHSCOPE_API_KEY"}
    done = run_cli(["webhooks", "list"], no_key, tmp_path)
    assert done.returncode == 2 and "no API key" in done.stderr
    done = run_cli(["webhooks", "list"], client_env(live_server, DASHSCOPE_API_KEY="sk-wrong"), tmp_path)
    assert done.returncode == 5 and "refused: HTTP 401 InvalidApiKey" in done.stderr
    assert json.loads(ok(["webhooks", "list", "--json"], env, tmp_path))["output"]["webhooks"] == []


# --- the signing secret ------------------------------------------------------------------------------------


def test_the_secret_is_stable_and_rotates_with_an_overlap(live_server: LiveServer, tmp_path: Path) -> None:
    env = client_env(live_server)
    # Flags instead of the variables, and a base URL without /api/v1.
    flags = ["--base-url", live_server.base_url, "--api-key", live_server.key]
    bare = {k: v for k, v in env.items() if not k.startswith("DASHSCOPE_")}
    done = run_cli(["webhooks", "secret", *flags], bare, tmp_path)
    assert done.returncode == 0, done.stderr
    first = done.stdout
    assert first.endswith("\n") and SECRET.match(first.strip()) and first.count("\n") == 1
    assert done.stderr == ""  # no rotation yet: nothing to say
    assert ok(["webhooks", "secret"], env, tmp_path) == first
    first = first.strip()

    done = run_cli(["webhooks", "secret", "--rotate", "--overlap", "3600"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    second = done.stdout.strip()
    assert SECRET.match(second) and second != first and done.stdout.count("\n") == 1
    assert re.fullmatch(rf"the previous secret also signs until {WIRE_TIME}\n", done.stderr), done.stderr
    # The new one stays; the overlap is still reported; --json shows the previous secret itself.
    done = run_cli(["webhooks", "secret"], env, tmp_path)
    assert done.stdout.strip() == second and "the previous secret also signs until" in done.stderr
    body = json.loads(ok(["webhooks", "secret", "--json"], env, tmp_path))
    assert (body["output"]["secret"], body["output"]["previous_secret"]) == (second, first)
    assert re.fullmatch(WIRE_TIME, body["output"]["previous_secret_expires_at"])

    # No overlap: the previous secret stops signing at once.
    done = run_cli(["webhooks", "secret", "--rotate", "--overlap", "0"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    third = done.stdout.strip()
    assert SECRET.match(third) and third not in (first, second)
    assert done.stderr == "the previous secret signs no more\n"
    body = json.loads(ok(["webhooks", "secret", "--json"], env, tmp_path))
    assert body["output"] == {"secret": third}
    # The server's default overlap (24 h).
    done = run_cli(["webhooks", "secret", "--rotate", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)["output"]
    assert output["previous_secret"] == third and output["secret"] not in (first, second, third)
    # Another account has its own.
    other = make_key(live_server.store, "other")
    assert ok(["webhooks", "secret", "--api-key", other], env, tmp_path).strip() not in (
        first, second, third, output["secret"]
    )  # fmt: skip


# --- a task's deliveries -----------------------------------------------------------------------------------


def test_the_deliveries_of_an_unknown_task_are_refused(live_server: LiveServer, tmp_path: Path) -> None:
    env = client_env(live_server)
    nobody = "00000000-0000-4000-8000-000000000000"
    for args in (["tasks", "deliveries", nobody], ["tasks", "redeliver", nobody, "d-1"]):
        done = run_cli(args, env, tmp_path)
        assert done.returncode == 5, done.stderr
        assert done.stdout == ""
        assert re.search(r"refused: HTTP 404 NotFound: .+", done.stderr), done.stderr


def test_deliveries_of_a_task_with_a_webhook_and_a_callback_url(
    live_server: LiveServer, worker: object, tmp_path: Path
) -> None:
    env = client_env(live_server)
    hook = ok(["webhooks", "add", HOOK_URL], env, tmp_path).split()[0]
    image = write_image(tmp_path / "a.png", 640, 480)
    submit = ["submit", "--image", str(image), "--prompt", "[Image 1] waves", "--resolution", "480P",
              "--duration", "3", "--progress", "none"]  # fmt: skip
    done = run_cli([*submit, "--callback-url", CALLBACK_URL, "--wait"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.split()[0]
    assert TASK_ID.match(task_id)
    task = live_server.store.get(task_id)
    assert task is not None and task.callback_url == CALLBACK_URL

    # Both events to both targets, none tried (no pump runs here).
    done = run_cli(["tasks", "deliveries", task_id], env, tmp_path)
    assert done.returncode == 0, done.stderr
    header, rows = table(done.stdout)
    assert header == ["DELIVERY_ID", "EVENT", "STATUS", "ATTEMPTS", "LAST", "WEBHOOK", "URL"]
    assert sorted(row[1:] for row in rows) == sorted(
        [
            ["running", "pending", "0", "-", hook, HOOK_URL],
            ["succeeded", "pending", "0", "-", hook, HOOK_URL],
            ["running", "pending", "0", "-", "callback", CALLBACK_URL],
            ["succeeded", "pending", "0", "-", "callback", CALLBACK_URL],
        ]
    )
    assert f"4 delivery(ies) of task {task_id}" in done.stderr
    body = json.loads(ok(["tasks", "deliveries", task_id, "--json"], env, tmp_path))
    assert body["output"]["task_id"] == task_id
    deliveries = body["output"]["deliveries"]
    assert sorted((d["webhook_id"] or "", d["url"], d["event"]) for d in deliveries) == [
        ("", CALLBACK_URL, "running"),
        ("", CALLBACK_URL, "succeeded"),
        (hook, HOOK_URL, "running"),
        (hook, HOOK_URL, "succeeded"),
    ]
    assert all(d["webhook_id"] is None for d in deliveries if d["url"] == CALLBACK_URL)
    assert all(d["attempts"] == 0 and d["attempt_log"] == [] for d in deliveries)
    assert sorted(d["delivery_id"] for d in deliveries) == sorted(row[0] for row in rows)

    # Redeliver one: queued again, the same delivery.
    callback = next(d for d in deliveries if d["webhook_id"] is None and d["event"] == "succeeded")
    out = ok(["tasks", "redeliver", task_id, callback["delivery_id"]], env, tmp_path)
    assert out.strip() == f"{callback['delivery_id']} pending: succeeded to {CALLBACK_URL}"
    body = json.loads(ok(["tasks", "redeliver", task_id, callback["delivery_id"], "--json"], env, tmp_path))
    again = body["output"]
    assert (again["delivery_id"], again["status"], again["url"]) == (
        callback["delivery_id"], "pending", CALLBACK_URL
    )  # fmt: skip
    assert again["webhook_id"] is None and re.fullmatch(WIRE_TIME, again["next_attempt_time"])
    # An unknown delivery, another account's task: refused.
    done = run_cli(["tasks", "redeliver", task_id, "nope"], env, tmp_path)
    assert done.returncode == 5 and "refused: HTTP 404 NotFound" in done.stderr, done.stderr
    other = make_key(live_server.store, "other")
    done = run_cli(["tasks", "deliveries", task_id, "--api-key", other], env, tmp_path)
    assert done.returncode == 5 and "refused: HTTP 404 NotFound" in done.stderr, done.stderr

    # A task without --callback-url tells only the webhook; a bad callback URL is refused before any task.
    done = run_cli([*submit, "--wait"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    _, rows = table(ok(["tasks", "deliveries", done.stdout.split()[0]], env, tmp_path))
    assert sorted(row[5:] for row in rows) == [[hook, HOOK_URL]] * 2
    done = run_cli([*submit, "--callback-url", "ftp://cb.example.com/y"], env, tmp_path)
    assert done.returncode == 5, done.stderr
    assert (
        done.stdout == "" and "refused: HTTP 400 InvalidParameter: X-Videosynth-Callback-Url" in done.stderr
    )
    assert live_server.key not in "".join(p.read_text() for p in tmp_path.glob("cli-webhooks-*.log"))


# --- help ----------------------------------------------------------------------------------------------------


def test_the_commands_are_in_the_help(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    top = ok(["--help"], env, tmp_path)
    assert re.search(r"^\s+webhooks\s+\S", top, re.MULTILINE), top
    tasks = ok(["tasks", "--help"], env, tmp_path)
    assert "deliveries" in tasks and "redeliver" in tasks
    assert "--callback-url URL" in ok(["submit", "--help"], env, tmp_path)
    for command in (["webhooks"], ["webhooks", "add"], ["webhooks", "secret"], ["tasks", "deliveries"]):
        text = ok([*command, "--help"], env, tmp_path)
        for code in ("0", "2", "5", "6"):
            assert re.search(rf"^\s+{code}\s+\S", text, re.MULTILINE), (command, code)
    for name in ("add", "list", "remove", "secret"):
        assert name in ok(["webhooks", "--help"], env, tmp_path)
