"""The command line, and the only place that reads the environment.

videosynth serve            API (+ embedded workers) on the embedded default
videosynth worker           a standalone worker
videosynth keys create|list|update|revoke
videosynth db upgrade
videosynth submit|tasks|webhooks   the command-line client (videosynth.client)
videosynth env              versions, for bug reports
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from videosynth import __version__
from videosynth.api.limits import EffectiveLimits
from videosynth.apikeys import display_prefix, hash_key, new_api_key
from videosynth.client.commands import add_client_commands
from videosynth.observability import metrics
from videosynth.observability.logs import configure_logging, resolve_format
from videosynth.settings import Settings
from videosynth.storage.base import Storage
from videosynth.tasks.models import INHERIT_ALL, ApiKey, Limits, Task
from videosynth.tasks.store import TaskStore
from videosynth.webhooks.pump import DeliveryPump, PumpSettings
from videosynth.webhooks.schedule import RetrySchedule

log = logging.getLogger("videosynth")

BOOTSTRAP_KEY_FILE = "bootstrap-api-key.txt"
# An embedded worker sends its metric counts to serve this often (when they changed); a scrape sees counts at
# most this old.
METRICS_REPORT_EVERY_S = 1.0


def _add_settings_flags(parser: argparse.ArgumentParser, *, server_limits: bool = True) -> None:
    for name, var, help_text in Settings.ENV:
        if not server_limits and name in Limits.FIELDS:
            continue  # the keys commands' own --query-rps etc. set a key's limits, not the server's
        parser.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{help_text} (env: {var})"
        )


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name, _var, _help in Settings.ENV}
    return Settings.from_environ(os.environ, **overrides)


def create_key(store: TaskStore, name: str, limits: Limits = INHERIT_ALL) -> str:
    key = new_api_key()
    store.create_key(name, hash_key(key), display_prefix(key), int(time.time() * 1000), limits)
    return key


# (flag, Limits field, help)
LIMIT_FLAGS = (
    ("--rps", "submit_rps", "submits per second"),
    ("--query-rps", "query_rps", "task queries per second"),
    ("--max-queued", "max_queued", "PENDING tasks at once"),
    ("--max-stored-mb", "max_stored_mb", "MB of uploads and data: references kept"),
)


def _limit_value(text: str) -> int | None:
    if text.strip().lower() == "inherit":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a limit: {text!r} (a number, 0 for none, or inherit)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError("a limit is >= 0 (0 switches it off)")
    return value


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    for flag, field, text in LIMIT_FLAGS:
        parser.add_argument(
            flag,
            dest=f"key_{field}",
            type=_limit_value,
            default=argparse.SUPPRESS,
            metavar="N",
            help=f"{text} (0 = no limit, inherit = the account's or the server's)",
        )


def _limit_changes(args: argparse.Namespace) -> dict[str, int | None]:
    return {
        field: getattr(args, f"key_{field}") for _, field, _ in LIMIT_FLAGS if hasattr(args, f"key_{field}")
    }


def _describe_limits(key: ApiKey, settings: Settings) -> str:
    effective = EffectiveLimits.of(key, settings).describe()
    shown = []
    for _, field, _ in LIMIT_FLAGS:
        value = effective[field]
        origin = "key" if getattr(key.limits, field) is not None else "account"
        if getattr(key.limits, field) is None and getattr(key.account_limits, field) is None:
            origin = "default"
        shown.append(f"{field}={value or 'off'}({origin})")
    return " ".join(shown)


def _open_store(settings: Settings) -> TaskStore:
    from videosynth.wiring import build_store

    store = build_store(settings)
    store.migrate()
    return store


def _bootstrap_keys(settings: Settings, store: TaskStore) -> str | None:
    """Make sure a usable key exists; return one we may show (the user's own or our bootstrap key)."""
    now = int(time.time() * 1000)
    shown = None
    for i, key in enumerate(settings.api_keys, start=1):
        if store.find_key(hash_key(key)) is None:
            store.create_key(f"env-{i}", hash_key(key), display_prefix(key), now)
        shown = shown or key
    if shown:
        return shown
    key_file = settings.work_dir.parent / BOOTSTRAP_KEY_FILE
    if key_file.is_file():
        saved = key_file.read_text().strip()
        if store.find_key(hash_key(saved)) is not None:
            return saved
    if any(k.revoked_ms is None for k in store.list_keys()):
        return None
    key = create_key(store, "bootstrap")
    # Kept so the next `make run` can print it again; the store itself only has its hash.
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key


def run_worker_process(
    settings: Settings,
    stop: object | None = None,
    parent_pid: int | None = None,
    reports: object | None = None,
    slot: int = 0,
) -> None:
    """Entry point of a worker process (standalone or spawned by ``serve``, which reads ``reports``)."""
    from videosynth.wiring import build_catalog, build_storage, build_store
    from videosynth.worker.loop import Worker

    settings = settings.replace(log_format=resolve_format(settings.log_format, sys.stderr))
    assert settings.log_format is not None
    configure_logging(settings.log_format, logging.INFO)
    stop_event = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if stop is not None:
        # The parent's multiprocessing Event: watch it so `serve` can stop us without signals.
        def watch() -> None:
            stop.wait()  # type: ignore[attr-defined]
            stop_event.set()

        threading.Thread(target=watch, daemon=True).start()
    if parent_pid is not None:
        # If `serve` dies without stopping us (SIGKILL), stop too instead of working on as an orphan.
        def watch_parent() -> None:
            while not stop_event.wait(1.0):
                if os.getppid() != parent_pid:
                    log.warning("parent %s is gone; stopping", parent_pid)
                    stop_event.set()

        threading.Thread(target=watch_parent, daemon=True).start()
    store = build_store(settings)
    storage = build_storage(settings, store)

    def report(status: dict[str, Any]) -> None:
        if reports is not None:
            reports.put({"slot": slot, "pid": os.getpid(), **status})  # type: ignore[attr-defined]

    worker = Worker(
        settings=settings,
        store=store,
        storage=storage,
        catalog=build_catalog(settings),
        report=report,
        environ=os.environ,  # relay engines' credentials (api_key_env), read here at the edge
    )
    pump = _webhook_pump(settings, store, storage)
    pump_thread = pump.start(stop_event)
    # serve cannot read this process's metrics: they go up with the reports (videosynth.observability.metrics).
    stopped = threading.Event()
    sender: threading.Thread | None = None
    if reports is not None:

        def send_metrics() -> None:
            last: metrics.Snapshot | None = None
            while not stopped.wait(METRICS_REPORT_EVERY_S):
                counts = metrics.snapshot()
                if counts != last:
                    report({"metrics": counts})
                    last = counts

        sender = threading.Thread(target=send_metrics, name="metrics-reports", daemon=True)
        sender.start()
    try:
        worker.run(stop_event)
    finally:
        stopped.set()
        stop_event.set()
        pump_thread.join(settings.webhook_timeout_seconds + 5)
        if sender is not None:
            sender.join(5)
            report({"metrics": metrics.snapshot()})  # what the drain counted, too
        store.close()


def _webhook_pump(settings: Settings, store: TaskStore, storage: Storage) -> DeliveryPump:
    """Every worker process makes due webhook deliveries, in the DashScope dialect's words."""
    from videosynth.api.dashscope.events import delivery_renderer

    def link(task: Task) -> str | None:
        if not task.result_key or task.end_time_ms is None:
            return None
        # Signed as the query answer signs it, so a delivery's link is the link a poll returns.
        return storage.url_for(task.result_key, task.end_time_ms // 1000 + settings.url_ttl_seconds)

    schedule = (
        RetrySchedule(settings.webhook_retry_delays)
        if settings.webhook_retry_delays is not None
        else RetrySchedule()
    )
    return DeliveryPump(
        store,
        delivery_renderer(settings.tz, link),
        PumpSettings(
            allow_private=settings.media_allow_private,
            timeout_s=settings.webhook_timeout_seconds,
            schedule=schedule,
            concurrency=settings.webhook_concurrency,
            poll_s=settings.webhook_poll_interval,
        ),
    )


class WorkerPool:
    """The embedded workers of ``serve``: restarted if one dies, stopped with the server."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._settings = settings
        self._stop = self._ctx.Event()
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._count = count
        self._closing = threading.Event()
        # Each worker reports its engines once they have loaded (or failed to); /readyz shows the latest.
        self._reports = self._ctx.Queue()
        self._status: dict[int, dict[str, Any]] = {}
        self._metrics = metrics.SnapshotBoard()

    def _spawn(self, slot: int) -> multiprocessing.process.BaseProcess:
        self._status[slot] = {"slot": slot, "engines": [], "state": "starting"}
        proc = self._ctx.Process(
            target=run_worker_process,
            args=(self._settings, self._stop, os.getpid(), self._reports, slot),
            name="videosynth-worker",
        )
        proc.start()
        return proc

    def start(self) -> None:
        self._procs = [self._spawn(slot) for slot in range(self._count)]
        threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True).start()
        threading.Thread(target=self._read_reports, name="worker-reports", daemon=True).start()

    def _read_reports(self) -> None:
        while not self._closing.is_set():
            try:
                report = self._reports.get(timeout=1.0)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if "metrics" in report:
                self._metrics.update(int(report["slot"]), int(report["pid"]), report["metrics"])
                continue
            self._status[int(report["slot"])] = {**report, "state": "running"}

    def metric_snapshots(self) -> list[metrics.Snapshot]:
        """The embedded workers' latest metric counts (those of restarted ones included), for /metrics."""
        return self._metrics.snapshots()

    def readiness(self) -> list[dict[str, Any]]:
        """Each embedded worker: starting, or running with its engines and their states."""
        return [dict(self._status[slot]) for slot in sorted(self._status)]

    def _supervise(self) -> None:
        while not self._closing.wait(1.0):
            for i, proc in enumerate(self._procs):
                if not proc.is_alive() and not self._closing.is_set():
                    log.warning("worker process %s exited with %s; restarting", proc.pid, proc.exitcode)
                    metrics.WORKER_RESTARTS.inc()
                    self._procs[i] = self._spawn(i)

    def stop(self, grace_s: float = 30.0) -> None:
        self._closing.set()
        self._stop.set()
        deadline = time.monotonic() + grace_s
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises SIGTERM/SIGINT after its shutdown, and the default handler would kill us
            # before the embedded workers are stopped (leaving them orphaned); just record the signal.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn waits for open responses to end; an event stream would never end by itself.
            stopping = getattr(self.config.app, "state", None)
            if stopping is not None and hasattr(stopping, "stopping"):
                stopping.stopping.set()
            super().handle_exit(sig, frame)

    from uvicorn.config import LOG_LEVELS

    from videosynth.api.app import create_app
    from videosynth.api.server import uvicorn_config
    from videosynth.maintenance import start_maintenance_thread
    from videosynth.wiring import build_catalog, build_storage

    settings = _settings(args)
    # Decided once, here: the embedded workers log in the API's format, whatever their own stderr is.
    settings = settings.replace(log_format=resolve_format(settings.log_format, sys.stderr))
    assert settings.log_format is not None
    configure_logging(settings.log_format, LOG_LEVELS.get(str(args.log_level).lower(), logging.INFO))
    catalog = build_catalog(settings)  # a bad models file stops us before anything starts
    if args.public_url is None and "VIDEOSYNTH_PUBLIC_URL" not in os.environ:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        settings = settings.replace(public_url=f"http://{host}:{args.port}")
    store = _open_store(settings)
    key = _bootstrap_keys(settings, store)
    storage = build_storage(settings, store)
    pool = WorkerPool(settings, settings.workers)
    app = create_app(
        settings=settings,
        store=store,
        storage=storage,
        catalog=catalog,
        workers=pool.readiness,
        worker_metrics=[pool.metric_snapshots],
    )
    pool.start()
    stop_maintenance = threading.Event()
    start_maintenance_thread(settings, store, storage, stop_maintenance)
    base = f"{settings.public_url}/api/v1"
    print(f"videosynth {__version__} serving on {settings.public_url}", flush=True)
    print(f"  base URL (DASHSCOPE_HTTP_BASE_URL): {base}", flush=True)
    if key:
        print(f"  API key: {key}", flush=True)
    else:
        print("  API keys exist already; create one with `videosynth keys create --name NAME`", flush=True)
    routes = ", ".join(f"{m.name} -> {m.engine}" for m in catalog)
    print(f"  workers: {settings.workers}; models: {routes}", flush=True)
    server = _Server(uvicorn_config(app, host=args.host, port=args.port, log_level=args.log_level))
    try:
        server.run()
    finally:
        stop_maintenance.set()
        pool.stop(settings.drain_seconds + 5)
        store.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from videosynth.wiring import build_catalog

    settings = _settings(args)
    build_catalog(settings)  # a bad models file stops us before anything starts
    _open_store(settings).close()
    settings = settings.replace(
        worker_models=_csv(args.models) or settings.worker_models,
        worker_engines=_csv(args.engine) or settings.worker_engines,
    )
    if settings.worker_metrics_listen:
        host, _, port = settings.worker_metrics_listen.rpartition(":")
        scrape = metrics.serve_registry(host.strip("[]"), int(port), token=settings.metrics_token)
        print(f"worker metrics on http://{settings.worker_metrics_listen}/metrics", flush=True)
        try:
            run_worker_process(settings)
        finally:
            scrape.shutdown()
        return 0
    run_worker_process(settings)
    return 0


def _csv(value: str | None) -> tuple[str, ...] | None:
    items = tuple(v.strip() for v in (value or "").split(",") if v.strip())
    return items or None


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _open_store(settings)
    try:
        if args.keys_command == "create":
            print(create_key(store, args.name, Limits(**_limit_changes(args))))
        elif args.keys_command == "list":
            for k in store.list_keys():
                state = "revoked" if k.revoked_ms else "active"
                print(
                    f"{k.key_id}  {k.prefix}…  {k.name}  account={k.account_id}  {state}"
                    f"  {_describe_limits(k, settings)}"
                )
        elif args.keys_command == "update":
            changes = _limit_changes(args)
            if not changes:
                print(
                    "nothing to change: give --rps, --query-rps, --max-queued or --max-stored-mb",
                    file=sys.stderr,
                )
                return 2
            if not store.update_limits(args.key, changes, on_account=args.account):
                print(f"no key {args.key!r}", file=sys.stderr)
                return 1
            print("updated " + ("account" if args.account else "key"))
        elif args.keys_command == "revoke":
            if not store.revoke_key(args.key, int(time.time() * 1000)):
                print(f"no active key {args.key!r}", file=sys.stderr)
                return 1
            print("revoked")
    finally:
        store.close()
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    store = _open_store(_settings(args))
    print("schema up to date")
    store.close()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """The effective model table: what ``GET /api/v1/models`` serves, engine options included, no secrets."""
    import json

    from videosynth.wiring import build_catalog

    catalog = build_catalog(_settings(args))
    if args.json:
        print(json.dumps({"data": [m.describe() for m in catalog]}, indent=2, ensure_ascii=False))
        return 0
    for m in catalog:
        options = ", ".join(f"{k}={v!r}" for k, v in m.shown_options().items()) or "(no options)"
        print(
            f"{m.name}: engine {m.engine}; {', '.join(m.resolutions)}; {len(m.ratios)} ratios;"
            f" {m.min_duration}-{m.max_duration} s; {m.min_references}-{m.max_references} references; {options}"
        )
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    import platform

    import av
    import numpy

    print(f"videosynth {__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(f"av {av.__version__} (codecs: libx264={'libx264' in av.codecs_available})")
    print(f"numpy {numpy.__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videosynth", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"videosynth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API (and embedded workers)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    _add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a standalone worker")
    worker.add_argument(
        "--models",
        default=os.environ.get("VIDEOSYNTH_WORKER_MODELS"),
        help="comma-separated models this worker serves (default: all) (env: VIDEOSYNTH_WORKER_MODELS)",
    )
    worker.add_argument(
        "--engine",
        default=os.environ.get("VIDEOSYNTH_WORKER_ENGINES"),
        help="comma-separated engines this worker runs (default: all) (env: VIDEOSYNTH_WORKER_ENGINES)",
    )
    _add_settings_flags(worker)
    worker.set_defaults(func=cmd_worker)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key in a new account and print it once")
    create.add_argument("--name", required=True)
    _add_limit_flags(create)
    _add_settings_flags(create, server_limits=False)
    update = keys_sub.add_parser(
        "update", help="change a key's limits, or with --account those of its account (its other keys too)"
    )
    update.add_argument("key", help="key id or prefix")
    update.add_argument("--account", action="store_true", help="set the limits of the key's account")
    _add_limit_flags(update)
    _add_settings_flags(update, server_limits=False)
    listing = keys_sub.add_parser("list", help="list keys (never their secret)")
    _add_settings_flags(listing)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key")
    _add_settings_flags(revoke)
    keys.set_defaults(func=cmd_keys)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply schema migrations (idempotent)")
    _add_settings_flags(upgrade)
    db.set_defaults(func=cmd_db)

    models = sub.add_parser("models", help="show the effective model table (engines, limits, options)")
    models.add_argument("--json", action="store_true", help="the GET /api/v1/models entries, as JSON")
    _add_settings_flags(models)
    models.set_defaults(func=cmd_models)

    env = sub.add_parser("env", help="print versions for bug reports")
    env.set_defaults(func=cmd_env)

    add_client_commands(sub, os.environ)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:
        print(f"videosynth: error: {exc}", file=sys.stderr)
        cause = exc.__cause__
        while cause is not None:
            print(f"  caused by: {cause}", file=sys.stderr)
            cause = cause.__cause__
        return 1
