"""The storage seam: one Protocol for results, uploads and stored references, and its contract
(``tests/test_storage_contract.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ObjectExists(Exception):
    """``put_file(..., overwrite=False)`` found the key taken (possibly by a concurrent put)."""


class Storage(Protocol):
    """Result storage. Keys are relative paths such as ``results/2026/11/25/<task_id>.mp4``."""

    def put_file(self, key: str, path: Path, content_type: str, *, overwrite: bool = True) -> None:
        """Store the file at ``path`` under ``key``; readers see the whole object or none of it.

        With ``overwrite=False`` exactly one of any number of concurrent puts to a new key wins; the others
        (and any put to an existing key) raise :class:`ObjectExists` and change nothing.
        Raises :class:`~videosynth.errors.StorageUnavailable` when the object cannot be written (a full
        disk, a storage server down), leaving nothing behind."""
        ...

    def url_for(self, key: str, expires_at_s: int) -> str:
        """An absolute, signed link to ``key`` valid until ``expires_at_s`` (epoch seconds)."""
        ...

    def exists(self, key: str) -> bool: ...

    def read_bytes(self, key: str, max_bytes: int) -> bytes | None:
        """The object's content, or None if there is no such object; refuses objects over ``max_bytes``."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys that start with ``prefix``, sorted."""
        ...
