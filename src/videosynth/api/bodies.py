"""Request bodies read with a cap: reading stops as soon as the cap is crossed."""

from __future__ import annotations

from fastapi import Request

from videosynth.errors import PayloadTooLarge


async def read_capped(request: Request, limit: int, too_large: str) -> bytes:
    """The body, or :class:`PayloadTooLarge` (detail ``too_large``) once more than ``limit`` bytes arrived.

    A declared Content-Length over the cap is refused before reading anything; a chunked body is counted
    as it streams in, so an endless one costs at most ``limit`` bytes of memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large)
    # A list, not a growing bytearray: no over-allocation, so a refused body costs at most the cap.
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)
