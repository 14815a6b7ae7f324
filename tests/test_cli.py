"""The CLI as users run it: subprocesses, real ports on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import SUBMIT_PATH, free_socket


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videosynth", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "VIDEOSYNTH_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "VIDEOSYNTH_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "VIDEOSYNTH_WORK_DIR": str(tmp_path / "var" / "work"),
        **extra,
    }


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    created = run_cli(["keys", "create", "--name", "alice"], env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"sk-[0-9a-f]{48}", key)
    listing = run_cli(["keys", "list"], env)
    assert "alice" in listing.stdout and "active" in listing.stdout
    assert key not in listing.stdout  # only a prefix is ever shown again
    key_id = listing.stdout.split()[0]
    assert run_cli(["keys", "revoke", key_id], env).returncode == 0
    assert "revoked" in run_cli(["keys", "list"], env).stdout
    assert run_cli(["keys", "revoke", key_id], env).returncode == 1
    assert run_cli(["db", "upgrade"], env).returncode == 0


def test_keys_carry_limits_and_list_shows_the_effective_ones(tmp_path: Path) -> None:
    # The server's defaults as an operator sets them (the tests' environment switches them off).
    env = cli_env(tmp_path, VIDEOSYNTH_SUBMIT_RPS="5", VIDEOSYNTH_QUERY_RPS="20", VIDEOSYNTH_MAX_QUEUED="500",
                  VIDEOSYNTH_MAX_STORED_MB="2048")  # fmt: skip
    created = run_cli(["keys", "create", "--name", "batch", "--rps", "2", "--max-queued", "0"], env)
    assert created.returncode == 0, created.stderr
    line = run_cli(["keys", "list"], env).stdout
    assert "submit_rps=2(key)" in line and "max_queued=off(key)" in line
    assert "query_rps=20(default)" in line and "max_stored_mb=2048(default)" in line
    key_id = line.split()[0]
    updated = run_cli(["keys", "update", key_id, "--account", "--query-rps", "50", "--rps", "9"], env)
    assert updated.returncode == 0, updated.stderr
    assert run_cli(["keys", "update", key_id, "--rps", "inherit"], env).returncode == 0
    line = run_cli(["keys", "list"], env).stdout
    assert "submit_rps=9(account)" in line and "query_rps=50(account)" in line
    # The server's own flags are not the key's: --query-rps above set the account, not the server.
    assert run_cli(["keys", "update", key_id], env).returncode == 2
    assert run_cli(["keys", "update", "sk-nobody", "--rps", "1"], env).returncode == 1
    bad = run_cli(["keys", "create", "--name", "x", "--rps", "-1"], env)
    assert bad.returncode == 2 and "0 switches it off" in bad.stderr


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(["keys", "list"], cli_env(tmp_path, VIDEOSYNTH_TIMEZONE="Mars/Olympus"))
    assert result.returncode == 1
    assert "unknown time zone" in result.stderr


def _serve(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    # The banner (stdout) is read here; the log (stderr) goes to a file, for the suite's secret check.
    with open(tmp_path / "serve.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "videosynth", "serve", "--port", str(port), "--log-level", "warning"],
            env=cli_env(tmp_path, **extra),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.strip().startswith("workers:"):
            break
    base = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base, lines
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("".join(lines) + (tmp_path / "serve.log").read_text(errors="replace"))


def test_serve_prints_url_and_a_working_key(tmp_path: Path) -> None:
    proc, base, lines = _serve(tmp_path, VIDEOSYNTH_WORKERS="0")
    try:
        text = "".join(lines)
        assert f"{base}/api/v1" in text
        key = re.search(r"API key: (sk-[0-9a-f]{48})", text)
        assert key, text
        body = {
            "model": "happyhorse-1.1-r2v",
            "input": {
                "prompt": "[Image 1]",
                "media": [{"type": "reference_image", "url": "https://x.test/a.png"}],
            },
        }
        r = requests.post(
            base + SUBMIT_PATH,
            json=body,
            headers={"Authorization": f"Bearer {key.group(1)}", "X-DashScope-Async": "enable"},
        )
        assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    # A second start prints the same key (kept beside the work dir), not a new one.
    proc, base, lines = _serve(tmp_path, VIDEOSYNTH_WORKERS="0")
    try:
        assert f"API key: {key.group(1)}" in "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_env_keys_are_accounts(tmp_path: Path) -> None:
    proc, base, _lines = _serve(
        tmp_path, VIDEOSYNTH_WORKERS="0", VIDEOSYNTH_API_KEYS="sk-one-123456789,sk-two-987654321"
    )
    try:
        body = {
            "model": "happyhorse-1.1-r2v",
            "input": {
                "prompt": "[Image 1]",
                "media": [{"type": "reference_image", "url": "https://x.test/a.png"}],
            },
        }
        h1 = {"Authorization": "Bearer sk-one-123456789", "X-DashScope-Async": "enable"}
        h2 = {"Authorization": "Bearer sk-two-987654321"}
        task_id = requests.post(base + SUBMIT_PATH, json=body, headers=h1).json()["output"]["task_id"]
        assert (
            requests.get(f"{base}/api/v1/tasks/{task_id}", headers=h1).json()["output"]["task_status"]
            == "PENDING"
        )
        assert (
            requests.get(f"{base}/api/v1/tasks/{task_id}", headers=h2).json()["output"]["task_status"]
            == "UNKNOWN"
        )
        assert requests.post(f"{base}/api/v1/tasks/{task_id}/cancel", headers=h2).status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
