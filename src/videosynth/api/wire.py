"""The DashScope wire shapes: request parsing (the cheap, synchronous checks) and response bodies.

This is the only module that knows DashScope's field names. Every check here is one that needs no
media bytes; anything that does (download, decode, size, format) is the worker's and ends as a
FAILED task instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from videosynth.catalog import Catalog, ModelSpec
from videosynth.errors import InvalidParameter, InvalidUrl
from videosynth.tasks.models import Task, TaskStatus

SEED_MAX = 2_147_483_647
# "<= 5000 non-Chinese or <= 2500 Chinese characters": a CJK character counts double against 5000.
PROMPT_BUDGET = 5000
IMAGE_REFERENCE = re.compile(r"\[\s*image\s*(\d+)\s*\]", re.IGNORECASE)
DATA_URL = re.compile(r"^data:(image/(?:jpeg|jpg|png|webp));base64,", re.IGNORECASE)
URL_SCHEMES = ("http://", "https://", "data:", "oss://")


@dataclass(frozen=True)
class SubmitRequest:
    model: ModelSpec
    prompt: str
    media_urls: tuple[str, ...]
    resolution: str
    ratio: str
    duration: int
    seed: int | None
    watermark: bool


def _missing(name: str) -> InvalidParameter:
    return InvalidParameter(f"Required parameter({name}) missing or invalid, please check the request parameters.")


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2FA1F
        or 0xF900 <= code <= 0xFAFF
        or 0x3000 <= code <= 0x303F
        or 0xFF00 <= code <= 0xFFEF
    )


def truncate_prompt(prompt: str, budget: int = PROMPT_BUDGET) -> str:
    """Cut the prompt where it would exceed the budget; the hosted service truncates silently too."""
    used = 0
    for i, ch in enumerate(prompt):
        used += 2 if _is_cjk(ch) else 1
        if used > budget:
            return prompt[:i]
    return prompt


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameter(f"The {name} must be an integer, got {value!r:.50}.")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidParameter(f"The {name} must be an integer, got {value!r:.50}.")
        value = int(value)
    return int(value)


def parse_submit(body: Any, catalog: Catalog, *, resolve_oss: bool) -> SubmitRequest:
    if not isinstance(body, dict):
        raise InvalidParameter("Required body invalid, please check the request body format.")
    model_name = body.get("model")
    if not isinstance(model_name, str) or not model_name:
        raise _missing("model")
    model = catalog.get(model_name)

    inp = body.get("input")
    if not isinstance(inp, dict):
        raise _missing("input")
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _missing("input.prompt")
    prompt = truncate_prompt(prompt)

    media = inp.get("media")
    if not isinstance(media, list) or not media:
        raise InvalidParameter(
            f"Required parameter(input.media) missing or invalid: {model.min_references} to "
            f"{model.max_references} reference images are required."
        )
    if len(media) > model.max_references:
        raise InvalidParameter(
            f"Too many media items: {len(media)} given, at most {model.max_references} reference images are allowed."
        )
    urls: list[str] = []
    for i, item in enumerate(media):
        if not isinstance(item, dict):
            raise InvalidParameter(f"input.media[{i}] must be an object with type and url.")
        kind = item.get("type")
        if kind != "reference_image":
            raise InvalidParameter(
                f"input.media[{i}].type {kind!r:.40} is not supported, only 'reference_image' is allowed."
            )
        url = item.get("url")
        if not isinstance(url, str) or not url.strip():
            raise _missing(f"input.media[{i}].url")
        url = url.strip()
        lower = url[:16].lower()
        if not lower.startswith(URL_SCHEMES):
            raise InvalidUrl()
        if lower.startswith("data:") and not DATA_URL.match(url[:64]):
            raise InvalidParameter(
                f"input.media[{i}].url: a data URL must be data:image/jpeg|png|webp;base64,<data>."
            )
        if lower.startswith("oss://") and not resolve_oss:
            raise InvalidUrl()
        urls.append(url)

    for match in IMAGE_REFERENCE.finditer(prompt):
        n = int(match.group(1))
        if n < 1 or n > len(urls):
            raise InvalidParameter(
                f"The prompt refers to [Image {n}] but {len(urls)} reference image(s) were provided."
            )

    params = body.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _missing("parameters")

    resolution = params.get("resolution", model.default_resolution)
    if resolution is None:
        resolution = model.default_resolution
    if not isinstance(resolution, str) or resolution.upper() not in model.resolutions:
        raise InvalidParameter(
            f"The resolution is not valid: {resolution!r:.40}; allowed: {', '.join(model.resolutions)}."
        )
    resolution = resolution.upper()

    ratio = params.get("ratio", model.default_ratio)
    if ratio is None:
        ratio = model.default_ratio
    if not isinstance(ratio, str) or ratio not in model.ratios:
        raise InvalidParameter(f"The ratio is not valid: {ratio!r:.40}; allowed: {', '.join(model.ratios)}.")

    duration_raw = params.get("duration", model.default_duration)
    duration = model.default_duration if duration_raw is None else _integer(duration_raw, "duration")
    if not model.min_duration <= duration <= model.max_duration:
        raise InvalidParameter(
            f"The duration is not valid: {duration}; it must be between {model.min_duration} and {model.max_duration} seconds."
        )

    seed_raw = params.get("seed")
    seed = None if seed_raw is None else _integer(seed_raw, "seed")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise InvalidParameter(f"The seed is not valid: {seed}; it must be in [0, {SEED_MAX}].")

    watermark = params.get("watermark", model.default_watermark)
    if watermark is None:
        watermark = model.default_watermark
    if not isinstance(watermark, bool):
        raise InvalidParameter(f"The watermark must be a boolean, got {watermark!r:.40}.")

    return SubmitRequest(
        model=model,
        prompt=prompt,
        media_urls=tuple(urls),
        resolution=resolution,
        ratio=ratio,
        duration=duration,
        seed=seed,
        watermark=watermark,
    )


# --- responses ------------------------------------------------------------------------------------


def wire_time(ms: int | None, tz: ZoneInfo) -> str | None:
    """``YYYY-MM-DD HH:mm:ss.SSS`` in the configured zone (SDK v2 requires strings, not numbers)."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def parse_list_time(value: str, tz: ZoneInfo, name: str) -> int:
    """``YYYYMMDDhhmmss`` in the configured zone -> epoch ms."""
    try:
        moment = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=tz)
    except ValueError:
        raise InvalidParameter(f"The {name} is not valid: {value!r:.40}; use YYYYMMDDhhmmss.") from None
    return int(moment.timestamp() * 1000)


def task_output(task: Task, tz: ZoneInfo, video_url: str | None) -> dict[str, Any]:
    """The ``GET /api/v1/tasks/{id}`` body (without request_id)."""
    output: dict[str, Any] = {"task_id": task.task_id, "task_status": task.status.value}
    for name, ms in (
        ("submit_time", task.submit_time_ms),
        ("scheduled_time", task.scheduled_time_ms),
        ("end_time", task.end_time_ms),
    ):
        text = wire_time(ms, tz)
        if text is not None:
            output[name] = text
    output["orig_prompt"] = task.prompt
    body: dict[str, Any] = {"output": output}
    if task.status is TaskStatus.SUCCEEDED:
        output["video_url"] = video_url or ""
        body["usage"] = dict(task.usage or {})
    elif task.status is TaskStatus.FAILED:
        output["code"] = task.error_code or "InternalError"
        output["message"] = task.error_message or "An internal error has occured."
    return body


def unknown_output(task_id: str) -> dict[str, Any]:
    return {"output": {"task_id": task_id, "task_status": "UNKNOWN"}}


def list_entry(task: Task) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "api_key_id": task.api_key_id,
        "caller_parent_id": task.account_id,
        "caller_uid": task.account_id,
        "gmt_create": task.submit_time_ms,
        "model_name": task.model,
        "region": "local",
        "request_id": task.request_id,
        "status": task.status.value,
        "task_id": task.task_id,
        "user_api_unique_key": f"apikey:v1:aigc:video-generation:video-synthesis:{task.model}",
    }
    if task.scheduled_time_ms is not None:
        entry["start_time"] = task.scheduled_time_ms
    if task.end_time_ms is not None:
        entry["end_time"] = task.end_time_ms
    return entry
