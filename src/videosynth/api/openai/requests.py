"""OpenAI-style requests: ``POST /v1/videos`` (JSON or multipart) and the list query, parsed and checked.

As in the other dialect, every check here is one that needs no download: an uploaded file's bytes are
checked (magic bytes, size) here, a URL's by the worker (a failed video then).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from videosynth import sizes
from videosynth.api.openai.errors import bad_param
from videosynth.api.services import TaskRequest
from videosynth.catalog import Catalog, ModelSpec
from videosynth.engines.markers import REFERENCE_MARKER, marker_number
from videosynth.errors import ModelNotFound
from videosynth.media.fetch import DEFAULT_MAX_BYTES as MAX_REFERENCE_BYTES
from videosynth.media.validate import sniff_image_format

#: OpenAI's own sizes: those not in our table are mapped to the nearest ratio and tier
#: (:func:`videosynth.sizes.nearest_size`).
OPENAI_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
SIZE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")
SECONDS = re.compile(r"^[1-9][0-9]?$")
MAX_PROMPT_CHARS = 5000
DATA_URL = re.compile(r"^data:image/(?:jpeg|jpg|png|webp);base64,", re.IGNORECASE)
MIMES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
#: The form fields a reference may come in: the SDK names one file ``input_reference`` and a list of
#: them ``input_reference[]``; a reference object ``{"image_url": ...}`` becomes ``input_reference[image_url]``.
REFERENCE_FIELD = re.compile(r"^input_reference(?:\[\d*\])?(?:\[(image_url|file_id)\])?$")
MAX_PAGE = 100
DEFAULT_PAGE = 20


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart body."""

    filename: str
    data: bytes


_ABSENT: Any = object()


def _text_field(value: Any, name: str) -> str | None:
    """A string field; None when it was not sent (a JSON null is sent, and not a string)."""
    if value is _ABSENT:
        return None
    if not isinstance(value, str):
        raise bad_param(name, f"'{name}' must be a string.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_param(name, f"'{name}' is not valid Unicode.") from None
    return value


def _model(catalog: Catalog, name: str | None) -> ModelSpec:
    if name is None:
        # No model named: the server's first model (the models file's first table).
        return next(iter(catalog))  # type: ignore[no-any-return]
    try:
        return catalog.get(name)
    except ModelNotFound:
        names = ", ".join(catalog.names())
        raise bad_param(
            "model", f"The model '{name[:60]}' does not exist; this server has: {names}.", "model_not_found"
        ) from None


def size_names(model: ModelSpec) -> list[str]:
    """Every size ``model`` takes: its part of the table, then OpenAI's own sizes (mapped)."""
    table = [f"{w}x{h}" for w, h in (sizes.frame_size(r, a) for r in model.resolutions for a in model.ratios)]
    return list(dict.fromkeys([*table, *OPENAI_SIZES]))


def _size(model: ModelSpec, value: str | None) -> tuple[str, str]:
    if value is None:
        return model.default_resolution, model.default_ratio
    match = SIZE.match(value)
    if match is not None:
        width, height = int(match.group(1)), int(match.group(2))
        exact = sizes.size_of(width, height, model.resolutions, model.ratios)
        if exact is not None:
            return exact
        if value in OPENAI_SIZES:
            return sizes.nearest_size(width, height, model.resolutions, model.ratios)
    raise bad_param(
        "size",
        f"Invalid size '{value[:40]}'. Supported sizes are: {', '.join(size_names(model))}.",
        "invalid_size",
    )


def _seconds(model: ModelSpec, value: Any) -> int:
    if value is _ABSENT:
        return model.default_duration
    seconds: int | None = None
    if isinstance(value, str) and SECONDS.match(value):
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    if seconds is None or not model.min_duration <= seconds <= model.max_duration:
        raise bad_param(
            "seconds",
            f"Invalid seconds: a whole number of seconds from {model.min_duration} to {model.max_duration},"
            " as a string or an integer.",
            "invalid_seconds",
        )
    return seconds


def _url_reference(value: Any, index: int) -> str:
    if not isinstance(value, str) or not value:
        raise bad_param(
            "input_reference", f"input_reference {index + 1}: image_url must be a non-empty string."
        )
    url = value
    lower = url[:16].lower()
    if lower.startswith("data:"):
        if not DATA_URL.match(url[:64]):
            raise bad_param(
                "input_reference",
                f"input_reference {index + 1}: a data URL must be data:image/jpeg|png|webp;base64,<data>.",
            )
        payload = len(url) - url.index(",") - 1
        if payload * 3 // 4 > MAX_REFERENCE_BYTES + 2:
            raise _too_large(index)
        return url
    if lower.startswith(("http://", "https://")):
        return url
    raise bad_param(
        "input_reference",
        f"input_reference {index + 1}: image_url must be an http(s):// URL or a data:image/... URL.",
        "invalid_url",
    )


def _too_large(index: int) -> Exception:
    return bad_param(
        "input_reference",
        f"input_reference {index + 1} is larger than {MAX_REFERENCE_BYTES // (1024 * 1024)} MB.",
        "image_too_large",
    )


def _file_reference(upload: Upload, index: int) -> str:
    """An uploaded image as the ``data:`` reference the submit path stores (and counts) like any other."""
    if len(upload.data) > MAX_REFERENCE_BYTES:
        raise _too_large(index)
    kind = sniff_image_format(upload.data[:16])
    if kind is None:
        raise bad_param(
            "input_reference",
            f"input_reference {index + 1} ({upload.filename[:60]!r}) is not a JPEG, PNG or WEBP image.",
            "invalid_image_format",
        )
    return f"data:{MIMES[kind]};base64,{base64.b64encode(upload.data).decode('ascii')}"


def _object_reference(value: Any, index: int) -> str:
    if isinstance(value, str):
        return _url_reference(value, index)
    if isinstance(value, Mapping):
        if "image_url" not in value:
            raise bad_param(
                "input_reference",
                "input_reference file_id is not supported here: send the file itself, or an image_url.",
                "unsupported_file_id",
            )
        return _url_reference(value.get("image_url"), index)
    raise bad_param(
        "input_reference", f"input_reference {index + 1} must be an object with image_url, or a URL string."
    )


def _request(
    catalog: Catalog,
    *,
    prompt: Any,
    model: Any,
    seconds: Any,
    size: Any,
    references: Sequence[str],
) -> TaskRequest:
    spec = _model(catalog, _text_field(model, "model"))
    text = _text_field(prompt, "prompt")
    if text is None or not text.strip():
        raise bad_param("prompt", "'prompt' is required.", "missing_required_parameter")
    if len(text) > MAX_PROMPT_CHARS:
        raise bad_param("prompt", f"'prompt' is longer than {MAX_PROMPT_CHARS} characters.")
    if not spec.min_references <= len(references) <= spec.max_references:
        raise bad_param(
            "input_reference",
            f"{spec.name} takes {spec.min_references} to {spec.max_references} reference images "
            f"(input_reference), {len(references)} were sent.",
            "missing_required_parameter" if not references else "invalid_value",
        )
    for match in REFERENCE_MARKER.finditer(text):
        n = marker_number(match)
        if not 1 <= n <= len(references):
            raise bad_param(
                "prompt",
                f"The prompt refers to {match.group(0)[:20]} but {len(references)} reference image(s) were sent.",
            )
    resolution, ratio = _size(spec, _text_field(size, "size"))
    return TaskRequest(
        model=spec,
        prompt=text,
        media_urls=tuple(references),
        resolution=resolution,
        ratio=ratio,
        duration=_seconds(spec, seconds),
        seed=None,
        watermark=spec.default_watermark,
    )


def parse_json(body: Any, catalog: Catalog) -> TaskRequest:
    """A JSON body: ``input_reference`` is a reference object (``{"image_url": ...}``), a URL string, or a
    list of either."""
    if not isinstance(body, dict):
        raise bad_param("body", "The request body must be a JSON object.")
    raw = body.get("input_reference", _ABSENT)
    items = [] if raw is _ABSENT else raw if isinstance(raw, list) else [raw]
    return _request(
        catalog,
        prompt=body.get("prompt", _ABSENT),
        model=body.get("model", _ABSENT),
        seconds=body.get("seconds", _ABSENT),
        size=body.get("size", _ABSENT),
        references=[_object_reference(item, i) for i, item in enumerate(items)],
    )


def parse_form(fields: Sequence[tuple[str, str | Upload]], catalog: Catalog) -> TaskRequest:
    """A multipart (or URL-encoded) body, its parts in the order sent: each ``input_reference`` file (or
    ``input_reference[]``, as the SDK names the files of a list) and each ``input_reference[image_url]``
    is one reference, in that order."""
    values: dict[str, str] = {}
    references: list[str] = []
    for name, value in fields:
        ref = REFERENCE_FIELD.match(name)
        if ref is not None:
            if isinstance(value, Upload):
                references.append(_file_reference(value, len(references)))
            elif ref.group(1) == "file_id":
                references.append(_object_reference({"file_id": value}, len(references)))
            else:
                references.append(_url_reference(value, len(references)))
        elif isinstance(value, str):
            values.setdefault(name, value)
    return _request(
        catalog,
        prompt=values.get("prompt", _ABSENT),
        model=values.get("model", _ABSENT),
        seconds=values.get("seconds", _ABSENT),
        size=values.get("size", _ABSENT),
        references=references,
    )


@dataclass(frozen=True)
class ListQuery:
    after: str | None
    limit: int
    newest_first: bool


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """``after``, ``limit``, ``order``; a parameter sent empty is malformed, not absent."""
    limit = DEFAULT_PAGE
    if "limit" in query:
        text = query["limit"]
        if not (text.isascii() and text.isdigit() and len(text) <= 6) or not 1 <= int(text) <= MAX_PAGE:
            raise bad_param("limit", f"'limit' must be an integer from 1 to {MAX_PAGE}.")
        limit = int(text)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_param("order", "'order' must be 'asc' or 'desc'.")
    return ListQuery(after=query.get("after"), limit=limit, newest_first=order == "desc")
