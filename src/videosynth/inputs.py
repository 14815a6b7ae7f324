"""References sent inline (``data:`` URLs) are kept in storage for as long as their task needs them.

A ``data:`` reference can be 20 MB of base64. Kept in the task's row it would grow the database by that
much per submit, forever (retention keeps finished tasks for days) and on every replica's backups. So the
API decodes each one at submit, stores the image as ``inputs/<task_id>/<n>`` and records ``input://<n>``
in its place; the worker reads it back from storage. The key is derived from the task's own id, so a task
can only ever read its own inputs, and no client can name one: the dialects accept no ``input://`` URL.

The objects go as soon as the task is finished (the worker deletes them) and, for tasks that end
elsewhere (a cancel while PENDING, a timeout, a submit that failed after storing them), housekeeping
sweeps every object whose task is finished or, seen twice in a row, does not exist.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from videosynth.errors import VideosynthError
from videosynth.media.fetch import DEFAULT_MAX_BYTES, parse_data_url
from videosynth.storage.base import Storage
from videosynth.tasks.models import TaskStatus
from videosynth.tasks.store import TaskStore

PREFIX = "inputs/"
SCHEME = "input://"
log = logging.getLogger(__name__)


def input_key(task_id: str, position: int) -> str:
    return f"{PREFIX}{task_id}/{position}"


def is_inline(url: str) -> bool:
    return url[:5].lower() == "data:"


def inline_size(url: str) -> int:
    """About how many bytes a ``data:`` URL decodes to (base64: 3 bytes per 4 characters)."""
    header, _, payload = url.partition(",")
    return len(payload) * 3 // 4 if header.lower().endswith(";base64") else len(payload)


def keys_of(task_id: str, media_urls: Iterable[str]) -> list[str]:
    """The storage keys of the inputs a task's media URLs name."""
    keys = []
    for url in media_urls:
        if url.startswith(SCHEME) and url[len(SCHEME) :].isdigit():
            keys.append(input_key(task_id, int(url[len(SCHEME) :])))
    return keys


def stash(storage: Storage, task_id: str, media_urls: Sequence[str], scratch: Path) -> tuple[str, ...]:
    """Store each ``data:`` reference of a new task; returns the media URLs to record for the task.

    Raises the media error of a ``data:`` URL that does not decode (nothing is left stored then)."""
    recorded: list[str] = []
    stored: list[str] = []
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        for position, url in enumerate(media_urls, start=1):
            if not is_inline(url):
                recorded.append(url)
                continue
            mime, data = parse_data_url(url, max_bytes=DEFAULT_MAX_BYTES)
            key = input_key(task_id, position)
            with tempfile.NamedTemporaryFile(dir=scratch, prefix="input-") as tmp:
                tmp.write(data)
                tmp.flush()
                storage.put_file(key, Path(tmp.name), mime)
            stored.append(key)
            recorded.append(f"{SCHEME}{position}")
    except BaseException:
        discard(storage, stored)
        raise
    return tuple(recorded)


def read(storage: Storage, task_id: str, url: str, max_bytes: int) -> bytes | None:
    """The bytes behind an ``input://<n>`` URL of this task, or None when they are gone."""
    position = url[len(SCHEME) :]
    if not position.isdigit():
        return None
    return storage.read_bytes(input_key(task_id, int(position)), max_bytes)


def discard(storage: Storage, keys: Iterable[str]) -> int:
    deleted = 0
    for key in keys:
        try:
            storage.delete(key)
            deleted += 1
        except VideosynthError as exc:
            log.warning("could not delete input %s: %s", key, exc)
    return deleted


class InputSweeper:
    """Deletes inputs whose task is finished, or missing at two sweeps in a row.

    A task's inputs are stored just before the task itself, so a single sighting without a task may be a
    submit in flight; a second one, a sweep later, is a submit that failed or a task already purged."""

    def __init__(self) -> None:
        self._orphans_seen: set[str] = set()

    def sweep(self, storage: Storage, store: TaskStore) -> int:
        keys = storage.list_keys(PREFIX)
        by_task: dict[str, list[str]] = {}
        for key in keys:
            task_id = key[len(PREFIX) :].split("/", 1)[0]
            by_task.setdefault(task_id, []).append(key)
        tasks = store.get_many(list(by_task)) if by_task else {}
        doomed: list[str] = []
        orphans: set[str] = set()
        for task_id, task_keys in by_task.items():
            task = tasks.get(task_id)
            if task is None:
                if task_id in self._orphans_seen:
                    doomed.extend(task_keys)
                else:
                    orphans.add(task_id)
            elif task.status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
                doomed.extend(task_keys)
        self._orphans_seen = orphans
        deleted = discard(storage, doomed)
        if deleted:
            log.info("maintenance: deleted %d inputs of finished or missing tasks", deleted)
        return deleted
