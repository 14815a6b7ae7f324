"""The web console at ``/``, driven in a real headless Chromium (Debian's chromium and chromedriver) against a
real server and worker on loopback: two images through the upload flow, a prompt naming both, a task that
reaches SUCCEEDED with its progress shown, a video that plays, a second task canceled while it runs, the
request as curl and Python. Once at a desktop size and once 390 px wide (where every control must fit).
The desktop run writes docs/console.png, the phone run docs/console-phone.png."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import (
    DESKTOP_HEIGHT,
    DESKTOP_WIDTH,
    SUBMIT_PATH,
    LiveServer,
    browser_errors,
    wait_for,
    write_image,
)
from videosynth.catalog import Catalog

DOCS = Path(__file__).resolve().parent.parent / "docs"
PHONE_WIDTH, PHONE_HEIGHT = 390, 844

# The animatic for the task that succeeds; a frame engine slow enough (half a second a frame, a progress
# report each frame) that the second task is still running when it is canceled.
MODELS = """
[models."happyhorse-1.0-r2v"]
engine = "animatic"

[models."slow-r2v"]
engine = "fake_engines:OddFrameEngine"
description = "a test engine that paints one colour, slowly"
frame_seconds = 0.5
frames_per_report = 1
"""


# Every control the page has (the per-image and per-task buttons are checked besides these).
CONTROLS = (
    "lang-toggle",
    "api-key",
    "forget-key",
    "file-button",
    "send-as",
    "prompt",
    "model",
    "resolution",
    "ratio",
    "duration",
    "seed",
    "watermark",
    "submit",
    "copy-curl",
    "copy-python",
    "snippet",
    "player",
    "download",
    "refresh",
)


@pytest.fixture
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    path = tmp_path_factory.mktemp("models") / "models.toml"
    path.write_text(MODELS, encoding="utf-8")
    return Catalog.from_file(path)


def task_row(driver: Any, task_id: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = driver.execute_script(
        """
        const li = [...document.querySelectorAll('#tasks li.task')].find(x => x.dataset.taskId === arguments[0]);
        if (!li) return null;
        const visible = (el) => !el.hidden && el.getClientRects().length > 0;
        return {
          status: li.dataset.status,
          badge: li.querySelector('.badge').textContent,
          pct: li.querySelector('.pct').textContent,
          value: li.querySelector('progress').value,
          stage: visible(li.querySelector('.task-stage')) ? li.querySelector('.task-stage').textContent : '',
          error: li.querySelector('.task-error').textContent,
          play: visible(li.querySelector('button.play')),
          cancel: visible(li.querySelector('button.cancel')),
        };
        """,
        task_id,
    )
    return result


RECORD_ROWS = """
window.rowsSeen = [];
const snapshot = () => {
  for (const li of document.querySelectorAll('#tasks li.task')) {
    const row = {id: li.dataset.taskId, status: li.dataset.status,
                 badge: li.querySelector('.badge').textContent, pct: li.querySelector('.pct').textContent};
    const last = window.rowsSeen.findLast(r => r.id === row.id);
    if (!last || last.status !== row.status || last.pct !== row.pct) window.rowsSeen.push(row);
  }
};
new MutationObserver(snapshot).observe(
  document.getElementById('tasks'), {subtree: true, childList: true, characterData: true, attributes: true});
"""


def task_ids(driver: Any) -> list[str]:
    ids: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#tasks li.task')].map(li => li.dataset.taskId)"
    )
    return ids


def row_button(driver: Any, task_id: str, kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'#tasks li.task[data-task-id="{task_id}"] button.{kind}')


def set_parameters(driver: Any, *, model: str, seed: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    Select(driver.find_element(By.ID, "resolution")).select_by_value("480P")
    Select(driver.find_element(By.ID, "ratio")).select_by_value("16:9")
    Select(driver.find_element(By.ID, "duration")).select_by_value("3")
    seed_box = driver.find_element(By.ID, "seed")
    seed_box.clear()
    seed_box.send_keys(seed)
    watermark = driver.find_element(By.ID, "watermark")
    if watermark.is_selected():
        watermark.click()


def assert_every_control_fits(driver: Any, width: int) -> None:
    """Each control is displayed and lies within the viewport's width; the page does not scroll sideways."""
    from selenium.webdriver.common.by import By

    inner = driver.execute_script("return window.innerWidth")
    assert inner == width, f"viewport is {inner} px wide, not {width}"
    elements = [(f"#{name}", driver.find_element(By.ID, name)) for name in CONTROLS]
    for selector in ("#thumbs button", "#tasks button"):
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        elements += [
            (f"{selector}[{i}]", el) for i, el in enumerate(found) if el.get_attribute("hidden") is None
        ]
    labels = driver.find_elements(By.CSS_SELECTOR, "label")
    elements += [(f"label[for={el.get_attribute('for')}]", el) for el in labels]
    assert len(elements) > len(CONTROLS) + 6
    for name, el in elements:
        assert el.is_displayed(), f"{name} is not displayed at {width} px"
        rect = el.rect
        assert rect["x"] >= 0 and rect["x"] + rect["width"] <= width + 0.5, f"{name} overflows: {rect}"
        assert rect["width"] > 0 and rect["height"] > 0, f"{name} has no size: {rect}"
    scroll_width = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll_width <= width, f"the page scrolls sideways: {scroll_width} > {width}"


def full_page_png(driver: Any) -> bytes:
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "fromSurface": True}
    )
    return base64.b64decode(shot["data"])


def test_console_page_and_assets_are_served_with_a_strict_policy(live_server: LiveServer) -> None:
    page = requests.get(live_server.base_url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="/console/console.js">' in page.text
    cached = requests.get(
        live_server.base_url + "/", headers={"If-None-Match": page.headers["etag"]}, timeout=10
    )
    assert cached.status_code == 304 and cached.content == b""
    for asset, kind in (
        ("console.js", "javascript"),
        ("i18n.js", "javascript"),
        ("console.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ):
        r = requests.get(f"{live_server.base_url}/console/{asset}", timeout=10)
        assert r.status_code == 200, asset
        assert kind in r.headers["content-type"], (asset, r.headers["content-type"])
        assert r.headers["content-security-policy"] == csp
        again = requests.get(
            f"{live_server.base_url}/console/{asset}",
            headers={"If-None-Match": r.headers["etag"]},
            timeout=10,
        )
        assert again.status_code == 304
    assert requests.get(live_server.base_url + "/console/missing.js", timeout=10).status_code == 404
    assert requests.get(live_server.base_url + "/console/%2e%2e/__init__.py", timeout=10).status_code == 404
    # The page is not part of the API's description.
    assert "/" not in requests.get(live_server.base_url + "/openapi.json", timeout=10).json().get("paths", {})


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_console_in_chromium(
    viewport: str, live_server: LiveServer, worker: object, chromium: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    driver = chromium
    phone = viewport == "phone"
    width = PHONE_WIDTH if phone else DESKTOP_WIDTH
    if phone:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": PHONE_WIDTH, "height": PHONE_HEIGHT, "deviceScaleFactor": 1, "mobile": True},
        )
    else:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": DESKTOP_WIDTH, "height": DESKTOP_HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
    driver.get(live_server.base_url + "/")
    wait_for("the page", lambda: driver.execute_script("return document.body.dataset.ready === 'true'"))
    wait_for("the models", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
    by_id = driver.find_element

    # Both languages; English by default for an en-US browser.
    assert by_id(By.TAG_NAME, "h1").text == "videosynth console"
    by_id(By.ID, "lang-toggle").click()
    assert by_id(By.TAG_NAME, "h1").text == "videosynth 控制台"
    assert by_id(By.ID, "submit").text == "生成视频"
    assert driver.execute_script("return document.documentElement.lang") == "zh-CN"
    by_id(By.ID, "lang-toggle").click()
    assert by_id(By.ID, "submit").text == "Generate video"

    # A wrong key first: the refusal is said in words.
    key_box = by_id(By.ID, "api-key")
    key_box.send_keys("sk-not-a-key-of-this-server")
    key_box.send_keys(Keys.TAB)
    status = by_id(By.ID, "submit-status")
    by_id(By.ID, "submit").click()
    assert status.text == "Add at least one image."
    # Two images through the file input, shown as [Image 1] and [Image 2].
    first = write_image(tmp_path / "harbour.png", 640, 480, seed=1, fmt="PNG")
    second = write_image(tmp_path / "lantern.jpg", 600, 600, seed=2, fmt="JPEG")
    by_id(By.ID, "file-input").send_keys(f"{first}\n{second}")
    wait_for("two thumbnails", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#thumbs li")) == 2)
    labels = [el.text for el in driver.find_elements(By.CSS_SELECTOR, "#thumbs .thumb-label")]
    assert labels == ["[Image 1]", "[Image 2]"]
    wait_for(
        "thumbnails decoded",
        lambda: driver.execute_script(
            "return [...document.querySelectorAll('#thumbs img')].every(i => i.complete && i.naturalWidth > 0)"
        ),
    )

    # The file input itself is out of sight but reachable by Tab (its label is the visible button).
    assert driver.execute_script("return document.getElementById('file-input').tabIndex") == 0
    by_id(By.ID, "api-key").send_keys(Keys.TAB)
    assert driver.switch_to.active_element == by_id(By.ID, "forget-key")
    driver.switch_to.active_element.send_keys(Keys.TAB)
    assert driver.switch_to.active_element == by_id(By.ID, "file-input")

    # The prompt: typed, by the insert button, and a reference to an image that is not there.
    prompt = by_id(By.ID, "prompt")
    prompt.send_keys("[Image 1] at dawn, wide shot. ")
    inserts = driver.find_elements(By.CSS_SELECTOR, "#thumbs button.insert")
    assert [b.text for b in inserts] == ["Insert [Image 1]", "Insert [Image 2]"]
    inserts[1].send_keys(Keys.ENTER)  # by keyboard: a real <button>
    assert driver.switch_to.active_element == prompt
    prompt.send_keys(" glows, close-up.")
    warning = by_id(By.ID, "prompt-warning")
    assert not warning.is_displayed()
    stray = " [Image 3] waves."
    prompt.send_keys(stray)
    wait_for("the warning", warning.is_displayed)
    assert "[Image 3]" in warning.text and "2 image" in warning.text
    prompt.send_keys(Keys.BACKSPACE * len(stray))
    wait_for("the warning to go", lambda: not warning.is_displayed())
    expected_prompt = "[Image 1] at dawn, wide shot. [Image 2] glows, close-up."
    assert prompt.get_attribute("value") == expected_prompt

    by_id(By.ID, "submit").click()
    wait_for("the refusal", lambda: "(InvalidApiKey)" in status.text)
    assert "API-key" in status.text
    driver.get_log("browser")  # the 401s just seen were expected

    # A task of the same account submitted by another client: the list shows the account's tasks.
    inline = "data:image/png;base64," + base64.b64encode(first.read_bytes()).decode()
    outside = live_server.submit(
        {
            "model": "happyhorse-1.0-r2v",
            "input": {"prompt": "[Image 1]", "media": [{"type": "reference_image", "url": inline}]},
            "parameters": {"resolution": "480P", "duration": 3},
        }
    )
    assert outside.status_code == 200, outside.text
    outside_id = outside.json()["output"]["task_id"]
    assert live_server.wait(outside_id)["output"]["task_status"] == "SUCCEEDED"

    # The right key: into sessionStorage, nowhere else.
    by_id(By.ID, "forget-key").click()
    assert task_ids(driver) == []
    assert key_box.get_attribute("value") == ""
    key_box.send_keys(live_server.key)
    key_box.send_keys(Keys.TAB)
    wait_for(
        "the key in sessionStorage",
        lambda: driver.execute_script(
            "return sessionStorage.getItem('videosynth.apiKey') === arguments[0]"
            " && localStorage.getItem('videosynth.apiKey') === null",
            live_server.key,
        ),
    )
    wait_for("the other client's task", lambda: task_ids(driver) == [outside_id])
    wait_for("its status", lambda: (task_row(driver, outside_id) or {}).get("status") == "SUCCEEDED")

    set_parameters(driver, model="happyhorse-1.0-r2v", seed="42")
    assert by_id(By.ID, "send-as").get_attribute("value") == "upload"
    # Every state the task list shows, as the page shows it (the animatic may take well under a second,
    # less than a poll of this test's).
    driver.execute_script(RECORD_ROWS)
    by_id(By.ID, "submit").click()
    wait_for("the submit", lambda: "Submitted task" in status.text, timeout=60)
    task_id = status.text.removeprefix("Submitted task ").removesuffix(".")
    assert task_id in task_ids(driver)

    # The server got what the page says it sent (the media are forgotten once a task ends).
    task = live_server.store.get(task_id)
    assert task is not None and task.prompt == expected_prompt
    assert task.params.resolution == "480P" and task.params.duration == 3 and task.params.seed == 42
    assert (task.params.ratio, task.params.watermark) == ("16:9", False)

    # The request as curl and as Python, with the key's name instead of the key.
    snippet = by_id(By.ID, "snippet")

    def snippet_text() -> str:
        text: str = snippet.get_attribute("textContent")
        return text

    curl = snippet_text()
    assert curl.startswith("curl -sS")
    assert live_server.base_url + SUBMIT_PATH in curl
    assert "$DASHSCOPE_API_KEY" in curl and live_server.key not in curl
    assert "X-DashScope-Async: enable" in curl and "X-DashScope-OssResourceResolve: enable" in curl
    # Both images went through the upload flow: two oss:// keys in the one policy's directory.
    uploaded = re.findall(r'"url": "(oss://[^"]+)"', curl)
    assert len(uploaded) == 2, curl
    assert uploaded[0].rsplit("/", 1)[0] == uploaded[1].rsplit("/", 1)[0]
    assert uploaded[0].endswith("/1-harbour.png") and uploaded[1].endswith("/2-lantern.jpg")
    for url in uploaded:
        assert live_server.storage.exists("uploads/" + url.removeprefix("oss://")), url
    by_id(By.ID, "copy-python").click()
    python = wait_for("the Python snippet", lambda: "requests.post(" in snippet_text() and snippet_text())
    assert "os.environ['DASHSCOPE_API_KEY']" in python and live_server.key not in python
    assert '"watermark": False' in python and '"seed": 42' in python
    compile(python, "snippet.py", "exec")
    by_id(By.ID, "copy-curl").click()
    wait_for("the curl snippet again", lambda: snippet_text() == curl)

    # The task in the list: its progress shown while it works, then SUCCEEDED at 100 %.
    final = wait_for(
        "the task to finish",
        lambda: (row := task_row(driver, task_id)) and row["status"] not in ("PENDING", "RUNNING") and row,
        timeout=240,
    )
    assert final["status"] == "SUCCEEDED", (final, live_server.query(task_id))
    assert final["badge"] == "Succeeded" and final["pct"] == "100%" and final["value"] == 100
    seen = [r for r in driver.execute_script("return window.rowsSeen") if r["id"] == task_id]
    assert seen[0]["status"] == "PENDING" and seen[0]["badge"] == "Pending" and seen[0]["pct"] == "0%", seen
    assert seen[-1]["status"] == "SUCCEEDED" and seen[-1]["pct"] == "100%", seen
    percents = [int(r["pct"].removesuffix("%")) for r in seen]
    assert percents == sorted(percents), seen
    assert final["play"] and not final["cancel"]

    # The player: the video plays (its clock advances) and can be downloaded.
    row_button(driver, task_id, "play").click()
    player = by_id(By.ID, "player")

    def playing() -> bool:
        state = driver.execute_script(
            "const v = arguments[0]; return {t: v.currentTime, e: v.error && [v.error.code, v.error.message]}",
            player,
        )
        assert state["e"] is None, f"Chromium cannot play the MP4: {state['e']}"
        return bool(state["t"] > 0.3)

    wait_for("the video to play", playing, timeout=60)
    download = by_id(By.ID, "download")
    assert download.is_displayed()
    assert download.get_attribute("href") == player.get_attribute("currentSrc")
    assert download.get_attribute("href").startswith(live_server.base_url + "/files/")
    assert requests.get(download.get_attribute("href"), timeout=30).headers["content-type"] == "video/mp4"

    # A second task, on the slow engine, canceled while it runs.
    set_parameters(driver, model="slow-r2v", seed="7")
    by_id(By.ID, "submit").click()
    wait_for("the second submit", lambda: "Submitted task" in status.text and task_id not in status.text)
    slow_id = status.text.removeprefix("Submitted task ").removesuffix(".")
    assert slow_id != task_id
    running = wait_for(
        "the second task's progress",
        lambda: (
            (row := task_row(driver, slow_id))
            and row["status"] == "RUNNING"
            and row["value"] > 0
            and "painting" in row["stage"]
            and row
        ),
        timeout=120,
    )
    assert running["cancel"] and not running["play"]

    # Another behind it waits in the queue, and says so.
    by_id(By.ID, "submit").click()
    wait_for("the queued submit", lambda: "Submitted task" in status.text and slow_id not in status.text)
    queued_id = status.text.removeprefix("Submitted task ").removesuffix(".")
    queued = wait_for(
        "the queue position",
        lambda: (row := task_row(driver, queued_id)) and "in the queue" in row["stage"] and row,
    )
    assert queued["status"] == "PENDING" and queued["stage"].startswith("queued") and queued["cancel"]

    # At this point every kind of control is on the page: each must fit the viewport.
    assert_every_control_fits(driver, width)

    # Both canceled: the queued one at once, the running one within a second or so.
    for canceled_id in (queued_id, slow_id):
        row_button(driver, canceled_id, "cancel").click()
        canceled = wait_for(
            "the cancel",
            lambda i=canceled_id: (row := task_row(driver, i)) and row["status"] == "CANCELED" and row,
        )
        assert canceled["badge"] == "Canceled" and not canceled["cancel"]
        assert live_server.query(canceled_id)["output"]["task_status"] == "CANCELED"
        live = by_id(By.ID, "live").get_attribute("textContent")
        assert f"Task {canceled_id}: Canceled" in live
    assert task_ids(driver) == [queued_id, slow_id, task_id, outside_id]

    # A third image, dropped on the drop zone, too small for the engine: the task fails, said in words.
    driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const canvas = document.createElement('canvas');
        canvas.width = 200;
        canvas.height = 150;
        canvas.getContext('2d').fillRect(10, 10, 60, 60);
        canvas.toBlob((blob) => {
          const dropped = new DataTransfer();
          dropped.items.add(new File([blob], 'tiny.png', {type: 'image/png'}));
          const zone = document.getElementById('dropzone');
          zone.dispatchEvent(new DragEvent('drop', {dataTransfer: dropped, bubbles: true, cancelable: true}));
          done();
        }, 'image/png');
        """
    )
    wait_for("a third thumbnail", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#thumbs li")) == 3)
    prompt.send_keys(" [Image 3] in the corner.")
    assert not warning.is_displayed()
    set_parameters(driver, model="happyhorse-1.0-r2v", seed="1")
    Select(by_id(By.ID, "send-as")).select_by_value("data")  # this time inline
    by_id(By.ID, "submit").click()
    wait_for("the third submit", lambda: "Submitted task" in status.text and slow_id not in status.text)
    failed_id = status.text.removeprefix("Submitted task ").removesuffix(".")
    failed = wait_for(
        "the failure", lambda: (row := task_row(driver, failed_id)) and row["status"] == "FAILED" and row
    )
    inline_curl = snippet_text()
    assert inline_curl.count('"url": "data:image/') == 3 and "oss://" not in inline_curl
    assert "OssResourceResolve" not in inline_curl
    out = live_server.query(failed_id)["output"]
    assert failed["badge"] == "Failed" and failed["error"] == f"{out['message']} ({out['code']})"
    assert "400" in failed["error"] and not failed["play"] and not failed["cancel"]
    assert task_ids(driver) == [failed_id, queued_id, slow_id, task_id, outside_id]

    # The list in Chinese, and back.
    by_id(By.ID, "lang-toggle").click()
    badges = driver.execute_script(
        "return [...document.querySelectorAll('#tasks .badge')].map(b => b.textContent)"
    )
    assert badges == ["已失败", "已取消", "已取消", "已成功", "已成功"]
    assert by_id(By.ID, "tasks-title").text == "任务（最近 24 小时）"
    by_id(By.ID, "lang-toggle").click()
    assert (task_row(driver, task_id) or {}).get("badge") == "Succeeded"

    assert browser_errors(driver) == []

    # Screenshots for the README: the desktop view with the video showing; the phone view whole.
    driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")
    driver.execute_script("arguments[0].pause()", player)
    DOCS.mkdir(exist_ok=True)
    if phone:
        (DOCS / "console-phone.png").write_bytes(full_page_png(driver))
    else:
        assert driver.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight",
            player,
        ), "the player is not in view for the screenshot"
        (DOCS / "console.png").write_bytes(driver.get_screenshot_as_png())

    # What was copied runs as it is: the first request again, as curl and as Python, with the key from
    # the environment.
    env = {**os.environ, "DASHSCOPE_API_KEY": live_server.key}
    runs = {"python": [sys.executable, "-c", python]}
    if shutil.which("curl") and shutil.which("bash"):
        runs["curl"] = ["bash", "-c", curl]
    for kind, command in runs.items():
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (kind, done.stderr[-2000:])
        answer = json.loads(done.stdout.removeprefix("200 ") if kind == "python" else done.stdout)
        assert answer["output"]["task_status"] == "PENDING", (kind, answer)
        if kind == "python":
            assert done.stdout.startswith("200 ")
