"""Settings: built once at the edge (the CLI) from an environ mapping and flags, then passed down.

Nothing else in the package reads the environment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_VAR_DIR = Path("var")


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{DEFAULT_VAR_DIR / 'videosynth.db'}"
    storage_url: str = f"file://{(DEFAULT_VAR_DIR / 'storage').absolute()}"
    public_url: str = "http://127.0.0.1:8000"
    api_keys: tuple[str, ...] = ()
    media_allow_private: bool = False
    workers: int = 1
    timezone: str = "UTC"
    default_engine: str = "animatic"
    work_dir: Path = DEFAULT_VAR_DIR / "work"
    lease_seconds: float = 30.0
    max_attempts: int = 3
    poll_interval: float = 0.05
    task_timeout_seconds: float = 3 * 3600
    retention_seconds: float = 24 * 3600
    max_running_per_account: int = 5
    # Per-client limits, the defaults of every account (keys and accounts may override them); 0 = off.
    submit_rps: int = 5
    query_rps: int = 20
    max_queued: int = 500
    max_stored_mb: int = 2048
    drain_seconds: float = 30.0
    engine_stop_seconds: float = 10.0
    model_routes: str = ""
    models_file: Path | None = None
    worker_models: tuple[str, ...] | None = None
    worker_engines: tuple[str, ...] | None = None
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str | None = None
    metrics_token: str | None = None
    worker_metrics_listen: str | None = None  # host:port of a standalone worker's own /metrics
    log_format: str | None = None  # json or text; None: text on a terminal, else json (decided at the edge)
    webhook_timeout_seconds: float = 10.0
    #: Seconds between the tries of a failed delivery, comma-separated; None: the built-in ~24 h schedule.
    webhook_retry_delays: tuple[float, ...] | None = None
    webhook_concurrency: int = 8
    webhook_poll_interval: float = 1.0
    webhook_secret_overlap_seconds: float = 24 * 3600

    @property
    def url_ttl_seconds(self) -> int:
        # Links live as long as the task does, like the hosted service's 24 h.
        return int(self.retention_seconds)

    # (field, env var, help) — the CLI builds one flag per row; the help text names the env var.
    ENV: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("database_url", "VIDEOSYNTH_DATABASE_URL", "task store URL (sqlite:///path)"),
        ("storage_url", "VIDEOSYNTH_STORAGE_URL", "result storage URL (file:///dir)"),
        ("public_url", "VIDEOSYNTH_PUBLIC_URL", "public base URL of this server (result and upload links)"),
        ("api_keys", "VIDEOSYNTH_API_KEYS", "comma-separated bootstrap API keys, each its own account"),
        (
            "media_allow_private",
            "VIDEOSYNTH_MEDIA_ALLOW_PRIVATE",
            "allow media URLs on private addresses (1/0)",
        ),
        ("workers", "VIDEOSYNTH_WORKERS", "worker processes embedded in serve (0 = API only)"),
        ("timezone", "VIDEOSYNTH_TIMEZONE", "time zone of the wire time strings"),
        ("default_engine", "VIDEOSYNTH_ENGINE", "engine behind the happyhorse-* models"),
        ("work_dir", "VIDEOSYNTH_WORK_DIR", "scratch directory of the workers"),
        (
            "model_routes",
            "VIDEOSYNTH_MODELS",
            "extra model=engine routes, comma-separated (e.g. happyhorse-1.1-r2v=wan-vace)",
        ),
        (
            "models_file",
            "VIDEOSYNTH_MODELS_FILE",
            "TOML file with one table per model: engine, limits, engine options (examples/models.toml)",
        ),
        ("lease_seconds", "VIDEOSYNTH_LEASE_SECONDS", "lease of a RUNNING task, renewed by heartbeats"),
        ("max_attempts", "VIDEOSYNTH_MAX_ATTEMPTS", "runs of a task whose worker was lost before it FAILS"),
        (
            "task_timeout_seconds",
            "VIDEOSYNTH_TASK_TIMEOUT",
            "seconds (or 90m, 3h) until an unfinished task FAILS",
        ),
        ("retention_seconds", "VIDEOSYNTH_RETENTION", "seconds (or 24h) a task and its video are kept"),
        (
            "max_running_per_account",
            "VIDEOSYNTH_MAX_RUNNING_PER_ACCOUNT",
            "running tasks per account (fair share)",
        ),
        ("submit_rps", "VIDEOSYNTH_SUBMIT_RPS", "submits per second per account (0 = no limit)"),
        ("query_rps", "VIDEOSYNTH_QUERY_RPS", "task queries per second per account (0 = no limit)"),
        ("max_queued", "VIDEOSYNTH_MAX_QUEUED", "PENDING tasks per account (0 = no limit)"),
        (
            "max_stored_mb",
            "VIDEOSYNTH_MAX_STORED_MB",
            "MB of uploads and data: references kept per account (0 = no limit)",
        ),
        (
            "drain_seconds",
            "VIDEOSYNTH_DRAIN_SECONDS",
            "on SIGTERM, seconds to finish the current task before handing it back",
        ),
        (
            "engine_stop_seconds",
            "VIDEOSYNTH_ENGINE_STOP_SECONDS",
            "seconds an engine has to honour a cancel or drain before its process is killed and replaced",
        ),
        ("poll_interval", "VIDEOSYNTH_POLL_INTERVAL", "seconds between queue polls of an idle worker"),
        (
            "metrics_token",
            "VIDEOSYNTH_METRICS_TOKEN",
            "bearer token GET /metrics requires (default: none, /metrics is open)",
        ),
        (
            "worker_metrics_listen",
            "VIDEOSYNTH_WORKER_METRICS_LISTEN",
            "host:port where a standalone `videosynth worker` serves its own /metrics (default: none)",
        ),
        (
            "webhook_timeout_seconds",
            "VIDEOSYNTH_WEBHOOK_TIMEOUT",
            "seconds a webhook receiver has to answer one delivery",
        ),
        (
            "webhook_retry_delays",
            "VIDEOSYNTH_WEBHOOK_RETRY_DELAYS",
            "seconds between the tries of a failed delivery, comma-separated (default: 10 tries over ~24 h)",
        ),
        (
            "webhook_concurrency",
            "VIDEOSYNTH_WEBHOOK_CONCURRENCY",
            "webhook deliveries each worker process makes at once",
        ),
        (
            "webhook_poll_interval",
            "VIDEOSYNTH_WEBHOOK_POLL_INTERVAL",
            "seconds between looks for due webhook deliveries",
        ),
        (
            "webhook_secret_overlap_seconds",
            "VIDEOSYNTH_WEBHOOK_SECRET_OVERLAP",
            "seconds (or 24h) a rotated webhook secret keeps signing beside the new one",
        ),
        (
            "log_format",
            "VIDEOSYNTH_LOG_FORMAT",
            "log lines as json or text (default: text when stderr is a terminal, else json)",
        ),
    )
    # Standard AWS variables for S3-compatible storage.
    AWS_ENV: ClassVar[tuple[tuple[str, str], ...]] = (
        ("s3_endpoint_url", "AWS_ENDPOINT_URL"),
        ("s3_access_key_id", "AWS_ACCESS_KEY_ID"),
        ("s3_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ("s3_region", "AWS_REGION"),
        ("s3_region", "AWS_DEFAULT_REGION"),
    )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **overrides: object) -> Settings:
        """Build from VIDEOSYNTH_* variables; ``overrides`` (CLI flags that were given) win."""
        values: dict[str, object] = {}
        for name, var in cls.AWS_ENV:
            if environ.get(var) and name not in values:
                values[name] = environ[var]
        for name, var, _help in cls.ENV:
            if var in environ and environ[var] != "":
                values[name] = environ[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**cast(dict[str, Any], _coerce(values)))


def parse_duration(value: object) -> float:
    """Seconds, or a number with an s/m/h/d suffix: ``90``, ``90s``, ``15m``, ``3h``, ``1d``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:])
        try:
            seconds = float(text[:-1]) * factor if factor else float(text)
        except ValueError:
            raise ValueError(f"not a duration: {value!r} (use seconds or 15m, 3h, 1d)") from None
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _coerce(values: dict[str, object]) -> dict[str, object]:
    out = dict(values)
    if "api_keys" in out and isinstance(out["api_keys"], str):
        out["api_keys"] = tuple(k.strip() for k in str(out["api_keys"]).split(",") if k.strip())
    if "media_allow_private" in out:
        out["media_allow_private"] = _parse_bool(out["media_allow_private"])
    if "workers" in out:
        out["workers"] = int(str(out["workers"]))
        if int(str(out["workers"])) < 0:
            raise ValueError("VIDEOSYNTH_WORKERS must be >= 0")
    for name in (
        "lease_seconds",
        "task_timeout_seconds",
        "retention_seconds",
        "drain_seconds",
        "engine_stop_seconds",
        "poll_interval",
        "webhook_timeout_seconds",
        "webhook_poll_interval",
        "webhook_secret_overlap_seconds",
    ):
        if name in out:
            out[name] = parse_duration(out[name])
    if isinstance(out.get("webhook_retry_delays"), str):
        try:
            delays = tuple(float(x) for x in str(out["webhook_retry_delays"]).split(",") if x.strip())
        except ValueError:
            raise ValueError(
                f"VIDEOSYNTH_WEBHOOK_RETRY_DELAYS must be seconds, comma-separated: {out['webhook_retry_delays']!r}"
            ) from None
        if any(d < 0 for d in delays):
            raise ValueError("VIDEOSYNTH_WEBHOOK_RETRY_DELAYS must not be negative")
        out["webhook_retry_delays"] = delays
    for name in ("max_attempts", "max_running_per_account", "webhook_concurrency"):
        if name in out:
            out[name] = int(str(out[name]))
            if int(str(out[name])) < 1:
                raise ValueError(f"{name} must be >= 1")
    for name in ("submit_rps", "query_rps", "max_queued", "max_stored_mb"):
        if name in out:
            out[name] = int(str(out[name]))
            if int(str(out[name])) < 0:
                raise ValueError(f"{name} must be >= 0 (0 switches it off)")
    for name in ("worker_models", "worker_engines"):
        if isinstance(out.get(name), str):
            out[name] = tuple(x.strip() for x in str(out[name]).split(",") if x.strip()) or None
    if "work_dir" in out:
        out["work_dir"] = Path(str(out["work_dir"]))
    if out.get("models_file") is not None:
        out["models_file"] = Path(str(out["models_file"]))
    if out.get("worker_metrics_listen") is not None:
        host, sep, port = str(out["worker_metrics_listen"]).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"VIDEOSYNTH_WORKER_METRICS_LISTEN must be host:port, got {out['worker_metrics_listen']!r}"
            )
    if out.get("log_format") is not None:
        out["log_format"] = str(out["log_format"]).strip().lower()
        if out["log_format"] not in ("json", "text"):
            raise ValueError(f"unknown log format {values['log_format']!r} (use json or text)")
    if "public_url" in out:
        out["public_url"] = str(out["public_url"]).rstrip("/")
    if "timezone" in out:
        try:
            ZoneInfo(str(out["timezone"]))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {out['timezone']!r}") from exc
    return out
