"""bench/minimax_h3_gpu.py, the minimax-h3 GPU benchmark, run here as a user runs it: its ``--tiny`` smoke
run on the CPU (the tests' tiny configs through the same build, engine and timing code), and its refusal
to run the full-size benchmark without a CUDA device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "minimax_h3_gpu.py"


def _run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "OUT"} | {"OMP_NUM_THREADS": "1"} | env
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_tiny_run_times_each_mode(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = _run(tmp_path, "--tiny", "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("RANDOM WEIGHTS") for line in lines)
    for mode in ("none", "text-encoder:cpu"):
        timed = [line for line in lines if line.startswith(f"{mode}: ") and "s/step" in line]
        assert len(timed) == 1, run.stdout
        # 9 sigma points by default: 8 transformer evaluations, each reported; no GPU, so no peak figure
        assert re.search(r": \d+\.\d{3} s/step \(8 steps\), text encode \d+\.\d\d s, ", timed[0]), timed[0]
        assert re.search(r", decode \d+\.\d\d s, total \d+\.\d s, peak n/a \(no CUDA\)", timed[0]), timed[0]
    # the engine refuses offload = "model" without a CUDA device: reported, not fatal
    assert any(line.startswith("model: skipped: ") and "CUDA" in line for line in lines), run.stdout
    assert "| none | " in run.stdout and "| model | skipped |" in run.stdout

    report = json.loads(out.read_text())
    assert report["random_weights"] is True and report["tiny"] is True and report["steps"] == 9
    results = {r["mode"]: r for r in report["results"]}
    assert [results[m]["status"] for m in ("none", "model", "text-encoder:cpu")] == ["ok", "skipped", "ok"]
    for mode in ("none", "text-encoder:cpu"):
        r = results[mode]
        assert r["steps"] == 8 and r["step_s"] > 0 and r["peak_gib"] is None
        assert 0 < r["text_encode_s"] < r["total_s"] and 0 < r["decode_s"] < r["total_s"]
        assert r["model_frames"] == 124  # 5 s: 120 frames asked, the model's 17n + 5 above that


def test_without_cuda_it_exits_2(tmp_path: Path) -> None:
    run = _run(tmp_path, "--modes", "none", CUDA_VISIBLE_DEVICES="")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no CUDA device" in run.stderr and "--tiny" in run.stderr
    assert run.stdout == ""
