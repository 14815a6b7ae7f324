"""DashScope requests: the submit body and the task-list query, parsed and checked.

Every check here is one that needs no media bytes; anything that does (download, decode, size, format) is
the worker's and ends as a FAILED task instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from videosynth.catalog import Catalog, ModelSpec
from videosynth.errors import InvalidImageSize, InvalidRequest, UnsupportedMediaUrl
from videosynth.media.fetch import DEFAULT_MAX_BYTES as MAX_REFERENCE_BYTES
from videosynth.tasks.models import TaskFilter, TaskStatus

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


def _check_data_url_size(url: str, index: int) -> None:
    # Judged from the encoded length (base64: 4 characters per 3 bytes), before anything is decoded or
    # stored: an oversized reference never gets as far as a task.
    payload = len(url) - url.index(",") - 1
    if payload * 3 // 4 > MAX_REFERENCE_BYTES + 2:
        raise InvalidImageSize(
            f"Invalid file size. The image file size must be less than {MAX_REFERENCE_BYTES // (1024 * 1024)}MB, "
            f"input.media[{index}] is a data URL of about {payload * 3 // 4} bytes."
        )


def _missing(name: str) -> InvalidRequest:
    return InvalidRequest(
        f"Required parameter({name}) missing or invalid, please check the request parameters."
    )


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
        raise InvalidRequest(f"The {name} must be an integer, got {value!r:.50}.")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidRequest(f"The {name} must be an integer, got {value!r:.50}.")
        value = int(value)
    return int(value)


def _text(value: str, name: str) -> str:
    """``value``, if it is valid Unicode: JSON may carry lone surrogates (``\\ud800``) that no store takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"The {name} is not valid Unicode (it contains a lone surrogate).") from None
    return value


def parse_submit(body: Any, catalog: Catalog, *, resolve_oss: bool) -> SubmitRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("Required body invalid, please check the request body format.")
    model_name = body.get("model")
    if not isinstance(model_name, str) or not model_name:
        raise _missing("model")
    model = catalog.get(_text(model_name, "model"))

    inp = body.get("input")
    if not isinstance(inp, dict):
        raise _missing("input")
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _missing("input.prompt")
    prompt = truncate_prompt(_text(prompt, "input.prompt"))

    media = inp.get("media")
    if not isinstance(media, list) or not media:
        raise InvalidRequest(
            f"Required parameter(input.media) missing or invalid: {model.min_references} to "
            f"{model.max_references} reference images are required."
        )
    if len(media) > model.max_references:
        raise InvalidRequest(
            f"Too many media items: {len(media)} given, at most {model.max_references} reference images are allowed."
        )
    urls: list[str] = []
    for i, item in enumerate(media):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input.media[{i}] must be an object with type and url.")
        kind = item.get("type")
        if kind != "reference_image":
            raise InvalidRequest(
                f"input.media[{i}].type {kind!r:.40} is not supported, only 'reference_image' is allowed."
            )
        url = item.get("url")
        if not isinstance(url, str) or not url.strip():
            raise _missing(f"input.media[{i}].url")
        url = _text(url.strip(), f"input.media[{i}].url")
        lower = url[:16].lower()
        if not lower.startswith(URL_SCHEMES):
            raise UnsupportedMediaUrl()
        if lower.startswith("data:"):
            if not DATA_URL.match(url[:64]):
                raise InvalidRequest(
                    f"input.media[{i}].url: a data URL must be data:image/jpeg|png|webp;base64,<data>."
                )
            _check_data_url_size(url, i)
        if lower.startswith("oss://") and not resolve_oss:
            raise UnsupportedMediaUrl()
        urls.append(url)

    for match in IMAGE_REFERENCE.finditer(prompt):
        digits = match.group(1)
        # int() refuses numbers of more than 4300 digits; anything past six digits is out of range anyway.
        n = int(digits) if len(digits) <= 6 else 0
        if n < 1 or n > len(urls):
            shown = digits if len(digits) <= 12 else f"{digits[:6]}...({len(digits)} digits)"
            raise InvalidRequest(
                f"The prompt refers to [Image {shown}] but {len(urls)} reference image(s) were provided."
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
        raise InvalidRequest(
            f"The resolution is not valid: {resolution!r:.40}; allowed: {', '.join(model.resolutions)}."
        )
    resolution = resolution.upper()

    ratio = params.get("ratio", model.default_ratio)
    if ratio is None:
        ratio = model.default_ratio
    if not isinstance(ratio, str) or ratio not in model.ratios:
        raise InvalidRequest(f"The ratio is not valid: {ratio!r:.40}; allowed: {', '.join(model.ratios)}.")

    duration_raw = params.get("duration", model.default_duration)
    duration = model.default_duration if duration_raw is None else _integer(duration_raw, "duration")
    if not model.min_duration <= duration <= model.max_duration:
        raise InvalidRequest(
            f"The duration is not valid: {duration}; it must be between {model.min_duration} and "
            f"{model.max_duration} seconds."
        )

    seed_raw = params.get("seed")
    seed = None if seed_raw is None else _integer(seed_raw, "seed")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise InvalidRequest(f"The seed is not valid: {seed}; it must be in [0, {SEED_MAX}].")

    watermark = params.get("watermark", model.default_watermark)
    if watermark is None:
        watermark = model.default_watermark
    if not isinstance(watermark, bool):
        raise InvalidRequest(f"The watermark must be a boolean, got {watermark!r:.40}.")

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


# --- the task list ----------------------------------------------------------------------------------

MAX_PAGE_SIZE = 100
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class ListQuery:
    page_no: int
    page_size: int
    #: None when the query can match nothing (``status=UNKNOWN``: unknown tasks are not in the table).
    filter: TaskFilter | None


def parse_list_time(value: str, tz: ZoneInfo, name: str) -> int:
    """``YYYYMMDDhhmmss`` in the configured zone -> epoch ms."""
    # strptime alone also takes one-digit fields ("2026127..."): exactly fourteen digits, as documented.
    if not (len(value) == 14 and value.isascii() and value.isdigit()):
        raise InvalidRequest(f"The {name} is not valid: {value!r:.40}; use YYYYMMDDhhmmss.")
    try:
        moment = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=tz)
    except ValueError:
        raise InvalidRequest(f"The {name} is not valid: {value!r:.40}; use YYYYMMDDhhmmss.") from None
    return int(moment.timestamp() * 1000)


# Past any real page; keeps the SQL offset inside 64 bits.
MAX_PAGE_NO = 999_999_999


def _positive_int(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    # isdigit() alone accepts "²" and other digits int() refuses; the length bounds int()'s work.
    if not (value.isascii() and value.isdigit()) or len(value) > 9 or int(value) < 1:
        raise InvalidRequest(f"The {name} is not valid: {value!r:.20}; it must be a positive integer.")
    return int(value)


def parse_list_query(query: Mapping[str, str], tz: ZoneInfo, now_ms: int) -> ListQuery:
    page_no = _positive_int(query.get("page_no"), "page_no", 1)
    page_size = min(_positive_int(query.get("page_size"), "page_size", 10), MAX_PAGE_SIZE)
    status = None
    lists_unknown = False
    if query.get("status"):
        name = query["status"].upper()
        if name == "UNKNOWN":
            lists_unknown = True
        else:
            try:
                status = TaskStatus(name)
            except ValueError:
                raise InvalidRequest(f"The status is not valid: {query['status']!r:.40}.") from None
    start_ms = parse_list_time(query["start_time"], tz, "start_time") if query.get("start_time") else None
    end_ms = parse_list_time(query["end_time"], tz, "end_time") if query.get("end_time") else None
    if lists_unknown:  # no stored task is UNKNOWN; the other parameters are still checked
        return ListQuery(page_no, page_size, None)
    # The hosted service lists a 24 h window, the last 24 h by default.
    if start_ms is None and end_ms is None:
        end_ms = now_ms
    if start_ms is None and end_ms is not None:
        start_ms = end_ms - DAY_MS
    if end_ms is None and start_ms is not None:
        end_ms = start_ms + DAY_MS
    return ListQuery(
        page_no,
        page_size,
        TaskFilter(
            status=status,
            model=query.get("model_name") or None,
            task_id=query.get("task_id") or None,
            api_key_id=query.get("api_key_id") or None,
            start_ms=start_ms,
            end_ms=end_ms,
        ),
    )
