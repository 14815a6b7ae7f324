"""House rules a machine checks: import layers (import-linter contracts in pyproject.toml) and no DashScope
wire names outside the dialect's own package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "videosynth"
DIALECT = PACKAGE / "api" / "dashscope"
# The relay engine is a DashScope client: its upstream's wire lives in its own package, and only there.
RELAY_CLIENT = PACKAGE / "engines" / "dashscope"
# So are the web console (a page calling this server's /api/v1) and the command-line client: each keeps the
# wire it speaks to its own package.
CONSOLE = PACKAGE / "api" / "console"
CLI_CLIENT = PACKAGE / "client"
WIRE_CLIENTS = {DIALECT, RELAY_CLIENT, CONSOLE, CLI_CLIENT}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# Field names, header names, codes and usage keys of the DashScope wire.
WIRE_NAMES = re.compile(
    r"task_status|x-dashscope|InvalidParameter|DataInspectionFailed|InvalidFile\.|video_url|orig_prompt"
    r"|input_video_duration|output_video_duration|video_count|[\"']SR[\"']",
    re.IGNORECASE,
)


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first, so the copy under test shadows the installed package.
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(PACKAGE, tree / "src" / "videosynth", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_import_layers_hold() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("tasks/models.py", "import videosynth.api.services", "The domain never imports the API"),
        ("engines/animatic/render.py", "from videosynth.storage import base", "Engines know nothing"),
        ("media/encode.py", "import videosynth.api.dashscope.errors", "The domain never imports the API"),
        (
            "api/services.py",
            "from videosynth.api.dashscope import responses",
            "The shared API layer knows no dialect",
        ),
        ("media/opencv.py", "import torch", "torch and diffusers only inside"),
        ("worker/host.py", "import diffusers", "torch and diffusers only inside"),
        ("observability/metrics.py", "import videosynth.api.app", "The domain never imports the API"),
        ("observability/logs.py", "from videosynth.tasks import models", "Observability depends on no other"),
        ("client/dashscope.py", "import videosynth.api.app", "The command-line client imports nothing"),
        ("worker/loop.py", "import videosynth.client.commands", "The domain never imports the API"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy_of_the_tree(tmp_path)
    target = tree / "src" / "videosynth" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = _lint_imports(tree)
    assert done.returncode != 0, done.stdout
    # A contract with ignored imports reads "... BROKEN (10 ignored imports)".
    broken = [row for row in done.stdout.splitlines() if re.search(r" BROKEN( \(.*\))?$", row)]
    assert any(row.startswith(contract) for row in broken), done.stdout


def test_no_wire_names_outside_the_dialect_package() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or WIRE_CLIENTS & set(path.parents) or "__pycache__" in path.parts:
            continue
        for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if WIRE_NAMES.search(text):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {text.strip()}")
    assert offenders == []


def test_the_wire_name_check_sees_a_wire_name(tmp_path: Path) -> None:
    # The pattern itself, on lines the domain must never contain.
    for line in ('output["task_status"] = "PENDING"', "X-DashScope-Async", 'usage["SR"]', "InvalidFile.Size"):
        assert WIRE_NAMES.search(line), line


# Field names, status words and error words of the OpenAI-style wire: only its dialect package speaks them.
OPENAI_DIALECT = PACKAGE / "api" / "openai"
OPENAI_WIRE_NAMES = re.compile(
    r"in_progress|input_reference|invalid_request_error|rate_limit_exceeded|video\.deleted|remixed_from"
)


def test_no_openai_wire_names_outside_its_dialect_package() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or OPENAI_DIALECT in path.parents or "__pycache__" in path.parts:
            continue
        for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if OPENAI_WIRE_NAMES.search(text):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {text.strip()}")
    assert offenders == []
