"""A still of a finished video: its first frame as a JPEG, kept in storage next to the result.

Made on first request (one frame decoded, in the API process's thread pool: milliseconds), stored under
:func:`thumbnail_key` and deleted with the result (housekeeping, or a client's delete).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import av
from PIL import Image

from videosynth.errors import StorageUnavailable

JPEG_QUALITY = 85


def thumbnail_key(result_key: str) -> str:
    """Where the still of the video stored at ``result_key`` is kept: beside it."""
    stem = result_key[: -len(".mp4")] if result_key.endswith(".mp4") else result_key
    return f"{stem}.thumb.jpg"


def first_frame_jpeg(video: Path | BinaryIO) -> bytes:
    """The first frame of ``video`` (an MP4 file or stream) as JPEG bytes, at the video's own size."""
    try:
        with av.open(str(video) if isinstance(video, Path) else video, mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                image = Image.fromarray(frame.to_ndarray(format="rgb24"))
                break
            else:
                raise StorageUnavailable("The stored video has no frames.")
    except av.error.FFmpegError as exc:
        raise StorageUnavailable(f"The stored video could not be decoded: {exc}") from exc
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
