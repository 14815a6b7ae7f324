"""Housekeeping that any process may do, one at a time: requeue lost tasks, time out, purge expired."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from videosynth import uploads
from videosynth.errors import VideosynthError
from videosynth.inputs import InputSweeper
from videosynth.media.thumbnail import thumbnail_key
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.storage.local import LocalStorage
from videosynth.tasks.models import MaintenanceReport
from videosynth.tasks.store import TaskStore

log = logging.getLogger(__name__)

EVERY_S = 5.0
# Listing every upload is not free on S3; once an hour per process is plenty for a 48-72 h rule.
UPLOAD_SWEEP_EVERY_S = 3600.0
PARTIAL_MAX_AGE_S = 3600.0
_last_upload_sweep = [float("-inf")]
# Workers delete a finished task's inputs themselves; the sweep is for tasks that ended elsewhere.
INPUT_SWEEP_EVERY_S = 60.0
_last_input_sweep = [float("-inf")]
_input_sweeper = InputSweeper()


def run_maintenance(settings: Settings, store: TaskStore, storage: Storage) -> MaintenanceReport | None:
    report = store.maintain(
        int(time.time() * 1000),
        max_attempts=settings.max_attempts,
        timeout_ms=int(settings.task_timeout_seconds * 1000),
        retention_ms=int(settings.retention_seconds * 1000),
    )
    if report is None:
        return None
    if time.monotonic() - _last_upload_sweep[0] >= UPLOAD_SWEEP_EVERY_S:
        _last_upload_sweep[0] = time.monotonic()
        sweep_uploads(storage, time.time())
        if isinstance(storage, LocalStorage):
            # A put in progress takes seconds; an hour-old partial file belongs to a process that died.
            removed = storage.sweep_partials(PARTIAL_MAX_AGE_S)
            if removed:
                log.info("maintenance: removed %d partial files of interrupted puts", removed)
    if time.monotonic() - _last_input_sweep[0] >= INPUT_SWEEP_EVERY_S:
        _last_input_sweep[0] = time.monotonic()
        try:
            _input_sweeper.sweep(storage, store)
        except VideosynthError as exc:
            log.warning("could not sweep inputs: %s", exc)
    # A result's still (made when a client first asked for it) goes with it.
    _delete_keys(storage, [k for key in report.purged_result_keys for k in (key, thumbnail_key(key))])
    if report.requeued or report.failed_lost or report.timed_out or report.purged_result_keys:
        log.info(
            "maintenance: requeued %d, failed (lost) %d, timed out %d, purged %d",
            report.requeued,
            report.failed_lost,
            report.timed_out,
            len(report.purged_result_keys),
        )
    return report


def _delete_keys(storage: Storage, keys: Sequence[str]) -> int:
    """Delete each key; a failure is logged and does not stop the rest. Returns how many were deleted."""
    deleted = 0
    for key in keys:
        try:
            storage.delete(key)
            deleted += 1
        except VideosynthError as exc:
            log.warning("could not delete %s: %s", key, exc)
    return deleted


def sweep_uploads(storage: Storage, now_s: float) -> int:
    """Delete uploaded ``oss://`` files past their 48-72 h life (see ``uploads.UPLOAD_KEEP_DAYS``)."""
    try:
        expired = uploads.expired_upload_keys(storage.list_keys(uploads.STORAGE_PREFIX), now_s)
    except VideosynthError as exc:
        log.warning("could not list uploads: %s", exc)
        return 0
    deleted = _delete_keys(storage, expired)
    if deleted:
        log.info("maintenance: deleted %d expired uploads", deleted)
    return deleted


def start_maintenance_thread(
    settings: Settings, store: TaskStore, storage: Storage, stop: threading.Event, every_s: float = EVERY_S
) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(every_s):
            try:
                run_maintenance(settings, store, storage)
            except VideosynthError as exc:
                log.warning("maintenance skipped: %s", exc)

    thread = threading.Thread(target=loop, name="maintenance", daemon=True)
    thread.start()
    return thread
