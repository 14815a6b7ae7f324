"""``videosynth submit``, ``videosynth tasks list|get|cancel|wait|deliveries|redeliver`` and ``videosynth
webhooks add|list|remove|secret``: the subcommands, their functions and the progress display.

Output: stdout carries what a script wants (the task id at once, the video URL at the end; with ``--json``
the raw answer bodies, one JSON object a line); stderr carries the progress and the messages. The exit code
says what happened (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from videosynth.client.dashscope import (
    DEFAULT_BASE_URL,
    TERMINAL_STATUSES,
    ClientError,
    DashScope,
    SubmitRequest,
    is_url,
    local_path,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELED = 3
EXIT_TIMED_OUT = 4
EXIT_REFUSED = 5
EXIT_UNAVAILABLE = 6
EXIT_UNKNOWN = 7
EXIT_INTERRUPTED = 130

EXIT_CODES = (
    (EXIT_OK, "succeeded (or the command was done)"),
    (EXIT_FAILED, "the task FAILED (its code and message are printed)"),
    (EXIT_USAGE, "usage error (bad arguments, no API key, a missing local file)"),
    (EXIT_CANCELED, "the task was CANCELED"),
    (EXIT_TIMED_OUT, "gave up waiting (--timeout); the task goes on"),
    (EXIT_REFUSED, "refused by the server (HTTP 4xx; code, message and request_id are printed)"),
    (EXIT_UNAVAILABLE, "server or network unavailable (5xx or no connection, after retries)"),
    (EXIT_UNKNOWN, "the task is UNKNOWN (no such task, expired, or another account's)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C) while waiting; the task goes on"),
)
EPILOG = (
    "exit codes:\n"
    + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES)
    + "\n\nenvironment: DASHSCOPE_API_KEY (the key), DASHSCOPE_HTTP_BASE_URL (the base URL), as the\n"
    "dashscope SDK reads them."
)

DEFAULT_MODEL = "happyhorse-1.0-r2v"
MAX_IMAGES = 9  # the wire's [Image 1]..[Image 9]
# Polling: the first wait, growing by a half each poll up to the cap (the SDK's own wait() goes 1 s to 5 s).
POLL_FIRST_S = 1.0
POLL_GROWTH = 1.5
POLL_MAX_S = 3.0
BAR_WIDTH = 24
LIST_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
WEBHOOK_EVENTS = ("running", "succeeded", "failed", "canceled")
WEBHOOK_FORMATS = ("standard", "dashscope-event")
MAX_OVERLAP_S = 7 * 24 * 3600  # the server's cap on a rotation's overlap
MAX_ERROR_SHOWN = 60  # characters of a delivery's last error in the listing

Clock = Callable[[], float]
#: One client subcommand: its requests and what it prints, given a connected client; returns the exit code.
Command = Callable[[DashScope, argparse.Namespace], int]


class WaitTimedOut(Exception):
    """``--timeout`` passed with the task still unfinished."""


# --- progress -------------------------------------------------------------------------------------------


def elapsed_text(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def stage_text(output: Mapping[str, Any]) -> str:
    stage = output.get("stage")
    text = str(stage) if isinstance(stage, str) and stage else ""
    ahead = output.get("queue_position")
    if isinstance(ahead, int) and not isinstance(ahead, bool) and ahead > 0:
        text = f"{text or 'queued'}, {ahead} ahead"
    return text


def percent_of(output: Mapping[str, Any]) -> int | None:
    value = output.get("progress")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return max(0, min(100, int(value)))


class Progress:
    """The wait's progress on a stream: ``bar`` redraws one line with ``\\r`` (for a terminal), ``lines``
    writes a line per change of status, stage or 10 % step (for logs), ``none`` writes nothing."""

    def __init__(self, stream: TextIO, mode: str, clock: Clock = time.monotonic) -> None:
        if mode == "auto":
            mode = "bar" if _isatty(stream) else "lines"
        self.mode = mode
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._output: Mapping[str, Any] | None = None
        self._last_key: tuple[str, str, int] | None = None
        self._drawn = 0

    def update(self, output: Mapping[str, Any]) -> None:
        self._output = output
        if self.mode == "bar":
            self._draw()
        elif self.mode == "lines":
            status = str(output.get("task_status", ""))
            percent = percent_of(output)
            key = (status, stage_text(output), -1 if percent is None else percent // 10)
            if key != self._last_key:
                self._last_key = key
                self._stream.write(self.line(output, bar=False) + "\n")
                self._stream.flush()

    def tick(self) -> None:
        """Between polls: the bar's clock moves on."""
        if self.mode == "bar" and self._output is not None:
            self._draw()

    def end(self) -> None:
        """The wait is over (or interrupted): the bar's line is left as it is, and ended."""
        if self.mode == "bar" and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = 0

    def line(self, output: Mapping[str, Any], *, bar: bool) -> str:
        status = str(output.get("task_status", ""))
        percent = percent_of(output)
        parts = [f"{status:<9}", f"{stage_text(output):<12}"]
        if bar:
            filled = 0 if percent is None else round(BAR_WIDTH * percent / 100)
            parts.append(f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}]")
        parts.append("  ?%" if percent is None else f"{percent:>3}%")
        parts.append(elapsed_text(self._clock() - self._started))
        return " ".join(p for p in parts if p).rstrip()

    def _draw(self) -> None:
        assert self._output is not None
        text = self.line(self._output, bar=True)
        pad = max(0, self._drawn - len(text))
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._drawn = len(text)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- the commands' shared parts ---------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _out(text: str) -> None:
    print(text, flush=True)


def _json_line(body: Mapping[str, Any]) -> None:
    _out(json.dumps(body, ensure_ascii=False))


def _usage_error(args: argparse.Namespace, message: str) -> int:
    _say(f"videosynth {args.command}: error: {message}")
    return EXIT_USAGE


def _connect(args: argparse.Namespace) -> DashScope | str:
    """A client for the arguments' base URL and key, or what is wrong with them."""
    if not args.api_key:
        return "no API key: set DASHSCOPE_API_KEY or give --api-key"
    try:
        return DashScope(args.base_url, args.api_key)
    except ValueError as exc:
        return f"--base-url: {exc}"


def _error_exit(exc: ClientError, task_id: str | None = None) -> int:
    if exc.refused:
        _say(f"videosynth: refused: {exc.describe()}")
        code = EXIT_REFUSED
    else:
        _say(f"videosynth: server unavailable: {exc.describe()}")
        code = EXIT_UNAVAILABLE
    if task_id is not None:
        _resume_hint(task_id)
    return code


def _resume_hint(task_id: str) -> None:
    _say(f"task {task_id} goes on; resume with: videosynth tasks wait {task_id}")


def _check_output(args: argparse.Namespace) -> str | None:
    target: Path | None = args.output
    if target is None:
        return None
    target = target.expanduser()
    if target.is_dir():
        return f"-o {target}: is a directory"
    if not target.parent.is_dir():
        return f"-o {target}: no directory {target.parent}"
    return None


def wait_for(
    client: DashScope,
    task_id: str,
    progress: Progress,
    timeout_s: float | None,
    *,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the task is finished (SUCCEEDED, FAILED, CANCELED or UNKNOWN); its last answer.

    Waits grow from ``POLL_FIRST_S`` to ``POLL_MAX_S``; a 429 is waited out (its Retry-After, at least the
    poll interval). Raises :class:`WaitTimedOut` once ``timeout_s`` passed, ClientError when the server
    refuses the query or cannot be reached."""
    deadline = None if timeout_s is None else clock() + timeout_s
    interval = POLL_FIRST_S
    while True:
        pause = interval
        try:
            body = client.query(task_id)
        except ClientError as exc:
            if exc.status != 429:
                raise
            pause = max(interval, exc.retry_after_s or 0.0)
        else:
            output = body["output"]
            progress.update(output)
            if output["task_status"] in TERMINAL_STATUSES:
                return body
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                raise WaitTimedOut()
            pause = min(pause, left)
        # In slices, so a terminal's bar keeps its clock running between polls.
        until = clock() + pause
        while (left := until - clock()) > 0:
            sleep(min(1.0, left))
            progress.tick()
        interval = min(interval * POLL_GROWTH, POLL_MAX_S)


def _wait_and_finish(client: DashScope, args: argparse.Namespace, task_id: str) -> int:
    """Wait for the task (with progress on stderr), then report it and fetch its video (``-o``)."""
    progress = Progress(sys.stderr, args.progress)
    try:
        body = wait_for(client, task_id, progress, args.timeout)
    except KeyboardInterrupt:
        progress.end()
        _say("interrupted: not waiting any longer (the task is not canceled)")
        _resume_hint(task_id)
        return EXIT_INTERRUPTED
    except WaitTimedOut:
        progress.end()
        _say(f"timed out: still unfinished after {args.timeout:g} s")
        _resume_hint(task_id)
        return EXIT_TIMED_OUT
    except ClientError as exc:
        progress.end()
        return _error_exit(exc, task_id)
    progress.end()
    return _finish(client, args, body)


def _finish(client: DashScope, args: argparse.Namespace, body: Mapping[str, Any]) -> int:
    output = body["output"]
    task_id, status = str(output.get("task_id", "")), output["task_status"]
    if args.json:
        _json_line(body)
    if status == "SUCCEEDED":
        url = output.get("video_url")
        if not args.json:
            _out(str(url or ""))
        if args.output is not None:
            if not isinstance(url, str) or not url:
                _say(f"task {task_id} SUCCEEDED but its answer has no video URL")
                return EXIT_UNAVAILABLE
            try:
                size = client.download(url, args.output)
            except KeyboardInterrupt:
                _say("interrupted: download stopped; the video is kept on the server")
                return EXIT_INTERRUPTED
            except ClientError as exc:
                return _error_exit(exc)
            except OSError as exc:
                _say(f"videosynth: cannot write {args.output}: {exc}")
                return EXIT_UNAVAILABLE
            _say(f"saved {args.output} ({size} bytes)")
        return EXIT_OK
    if status == "FAILED":
        code, message = output.get("code") or "", output.get("message") or ""
        _say(f"task {task_id} FAILED: {code}: {message}".rstrip(": "))
        return EXIT_FAILED
    if status == "CANCELED":
        _say(f"task {task_id} was CANCELED")
        return EXIT_CANCELED
    _say(f"task {task_id} is UNKNOWN: no such task, expired, or another account's")
    return EXIT_UNKNOWN


# --- submit ---------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    images: list[str] = args.image
    if len(images) > MAX_IMAGES:
        return _usage_error(args, f"at most {MAX_IMAGES} --image (got {len(images)})")
    local: dict[int, Path] = {}
    for i, reference in enumerate(images):
        if not is_url(reference):
            path = local_path(reference)
            if not path.is_file():
                return _usage_error(args, f"--image {reference}: no such file")
            local[i] = path
    problem = _check_output(args)
    if problem:
        return _usage_error(args, problem)
    client = _connect(args)
    if isinstance(client, str):
        return _usage_error(args, client)
    with client:
        try:
            urls = list(images)
            for i, path in local.items():
                if args.progress != "none":
                    _say(f"uploading {path} ({path.stat().st_size} bytes)")
                urls[i] = client.upload(path, args.model)
            body = client.submit(
                SubmitRequest(
                    model=args.model,
                    prompt=args.prompt,
                    media_urls=tuple(urls),
                    resolution=args.resolution,
                    ratio=args.ratio,
                    duration=args.duration,
                    seed=args.seed,
                    watermark=args.watermark,
                ),
                resolve_uploads=bool(local),
                callback_url=args.callback_url,
            )
        except KeyboardInterrupt:
            _say("interrupted before the task was submitted (or before its answer came)")
            return EXIT_INTERRUPTED
        except ClientError as exc:
            return _error_exit(exc)
        except OSError as exc:
            return _usage_error(args, f"cannot read an image: {exc}")
        task_id = str(body["output"]["task_id"])
        if args.json:
            _json_line(body)
        else:
            _out(task_id)
        if not (args.wait or args.output is not None):
            return EXIT_OK
        return _wait_and_finish(client, args, task_id)


# --- tasks ----------------------------------------------------------------------------------------------


def cmd_tasks(args: argparse.Namespace) -> int:
    if args.tasks_command == "wait":
        problem = _check_output(args)
        if problem:
            return _usage_error(args, problem)
    commands: dict[str, Command] = {
        "list": _tasks_list,
        "get": _tasks_get,
        "cancel": _tasks_cancel,
        "deliveries": _tasks_deliveries,
        "redeliver": _tasks_redeliver,
    }
    return _with_client(args, commands.get(args.tasks_command, _tasks_wait))


def _tasks_wait(client: DashScope, args: argparse.Namespace) -> int:
    return _wait_and_finish(client, args, args.task_id)


def _with_client(args: argparse.Namespace, command: Command) -> int:
    """Run one request-and-print ``command`` against the server the flags name, with the exit codes every
    client command shares (a refused request, an interrupt)."""
    client = _connect(args)
    if isinstance(client, str):
        return _usage_error(args, client)
    with client:
        try:
            return command(client, args)
        except ClientError as exc:
            return _error_exit(exc)
        except KeyboardInterrupt:
            _say("interrupted")
            return EXIT_INTERRUPTED


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Rows under a header on stdout, in columns two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _time_of(ms: object) -> str:
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _tasks_list(client: DashScope, args: argparse.Namespace) -> int:
    body = client.list_tasks(
        status=args.status,
        model_name=args.model,
        page_no=args.page,
        page_size=args.page_size,
        start_time=args.start_time,
        end_time=args.end_time,
    )
    if args.json:
        _json_line(body)
        return EXIT_OK
    data = body.get("data") if isinstance(body.get("data"), list) else []
    assert isinstance(data, list)
    rows = [
        (
            str(item.get("task_id", "")),
            str(item.get("status", "")),
            str(item.get("model_name", "")),
            _time_of(item.get("gmt_create")),
            _time_of(item.get("end_time")),
        )
        for item in data
        if isinstance(item, Mapping)
    ]
    _table(("TASK_ID", "STATUS", "MODEL", "CREATED", "ENDED"), rows)
    total, pages = body.get("total", len(rows)), body.get("total_page", 1)
    _say(f"page {body.get('page_no', args.page or 1)} of {pages or 1}; {total} task(s) in all")
    return EXIT_OK


# The query's fields in a reading order; any others follow.
_GET_ORDER = (
    "task_id", "task_status", "stage", "progress", "queue_position", "submit_time", "scheduled_time",
    "end_time", "code", "message", "video_url",
)  # fmt: skip


def _tasks_get(client: DashScope, args: argparse.Namespace) -> int:
    body = client.query(args.task_id)
    output: dict[str, Any] = body["output"]
    if args.json:
        _json_line(body)
    else:
        names = [n for n in _GET_ORDER if n in output] + [n for n in output if n not in _GET_ORDER]
        width = max(len(n) for n in names)
        for name in names:
            value = output[name]
            shown = f"{value}%" if name == "progress" else value
            _out(f"{name:<{width}}  {shown}")
        usage = body.get("usage")
        if isinstance(usage, Mapping):
            _out(f"{'usage':<{width}}  " + " ".join(f"{k}={v}" for k, v in usage.items()))
    return EXIT_UNKNOWN if output["task_status"] == "UNKNOWN" else EXIT_OK


def _tasks_cancel(client: DashScope, args: argparse.Namespace) -> int:
    body = client.cancel(args.task_id)
    if args.json:
        _json_line(body)
        return EXIT_OK
    status = client.query(args.task_id)["output"]["task_status"]
    if status == "CANCELED":
        _out(f"{args.task_id} CANCELED")
    else:
        # This server also cancels RUNNING tasks: the worker stops within a second or so.
        _out(f"{args.task_id} cancel requested (now {status})")
    return EXIT_OK


def _last_outcome(delivery: Mapping[str, Any]) -> str:
    """The last try's answer (``HTTP 500``) or, when none came, its error; ``-`` before any try."""
    log = delivery.get("attempt_log")
    last = log[-1] if isinstance(log, list) and log and isinstance(log[-1], Mapping) else {}
    status = last.get("status_code")
    if isinstance(status, int) and not isinstance(status, bool):
        return f"HTTP {status}"
    error = last.get("error")
    if isinstance(error, str) and error:
        text = " ".join(error.split())
        return text if len(text) <= MAX_ERROR_SHOWN else text[: MAX_ERROR_SHOWN - 3] + "..."
    return "-"


def _delivery_row(delivery: Mapping[str, Any]) -> tuple[str, ...]:
    webhook = delivery.get("webhook_id")
    return (
        str(delivery.get("delivery_id", "")),
        str(delivery.get("event", "")),
        str(delivery.get("status", "")),
        str(delivery.get("attempts", "")),
        _last_outcome(delivery),
        str(webhook) if webhook else "callback",
        str(delivery.get("url", "")),
    )


def _tasks_deliveries(client: DashScope, args: argparse.Namespace) -> int:
    body = client.deliveries(args.task_id)
    if args.json:
        _json_line(body)
        return EXIT_OK
    found = [d for d in body["output"]["deliveries"] if isinstance(d, Mapping)]
    _table(
        ("DELIVERY_ID", "EVENT", "STATUS", "ATTEMPTS", "LAST", "WEBHOOK", "URL"),
        [_delivery_row(d) for d in found],
    )
    _say(f"{len(found)} delivery(ies) of task {args.task_id}")
    return EXIT_OK


def _tasks_redeliver(client: DashScope, args: argparse.Namespace) -> int:
    body = client.redeliver(args.task_id, args.delivery_id)
    if args.json:
        _json_line(body)
        return EXIT_OK
    d = body["output"]
    _out(f"{d['delivery_id']} {d.get('status', '')}: {d.get('event', '')} to {d.get('url', '')}")
    return EXIT_OK


# --- webhooks -------------------------------------------------------------------------------------------


def cmd_webhooks(args: argparse.Namespace) -> int:
    if args.webhooks_command == "secret" and args.overlap is not None and not args.rotate:
        return _usage_error(args, "--overlap applies to --rotate only")
    commands: dict[str, Command] = {
        "add": _webhooks_add,
        "list": _webhooks_list,
        "remove": _webhooks_remove,
    }
    return _with_client(args, commands.get(args.webhooks_command, _webhooks_secret))


def _events_text(hook: Mapping[str, Any]) -> str:
    events = hook.get("events")
    return ",".join(str(e) for e in events) if isinstance(events, list) else ""


def _webhooks_add(client: DashScope, args: argparse.Namespace) -> int:
    body = client.add_webhook(
        args.url,
        events=args.events,
        fmt=args.format,
        include_result=False if args.no_result else None,
    )
    if args.json:
        _json_line(body)
        return EXIT_OK
    hook = body["output"]
    line = f"{hook['webhook_id']}  {hook.get('url', '')}  format={hook.get('format', '')}"
    line += f"  events={_events_text(hook)}"
    if hook.get("include_result") is False:
        line += "  result=off"
    _out(line)
    return EXIT_OK


def _webhooks_list(client: DashScope, args: argparse.Namespace) -> int:
    body = client.list_webhooks()
    if args.json:
        _json_line(body)
        return EXIT_OK
    hooks = [h for h in body["output"]["webhooks"] if isinstance(h, Mapping)]
    rows = [
        (str(h.get("webhook_id", "")), str(h.get("format", "")), _events_text(h), str(h.get("url", "")))
        for h in hooks
    ]
    _table(("WEBHOOK_ID", "FORMAT", "EVENTS", "URL"), rows)
    _say(f"{len(rows)} webhook(s)")
    return EXIT_OK


def _webhooks_remove(client: DashScope, args: argparse.Namespace) -> int:
    body = client.remove_webhook(args.webhook_id)
    if args.json:
        _json_line(body)
    else:
        _out(f"{body['output'].get('webhook_id', args.webhook_id)} removed")
    return EXIT_OK


def _webhooks_secret(client: DashScope, args: argparse.Namespace) -> int:
    body = client.rotate_webhook_secret(args.overlap) if args.rotate else client.webhook_secret()
    output = body["output"]
    if args.json:
        _json_line(body)
    else:
        _out(str(output["secret"]))  # alone on stdout: SECRET=$(videosynth webhooks secret)
    until = output.get("previous_secret_expires_at")
    if until:
        _say(f"the previous secret also signs until {until}")
    elif args.rotate:
        _say("the previous secret signs no more")
    return EXIT_OK


# --- the parsers ----------------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _overlap_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= MAX_OVERLAP_S:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_OVERLAP_S} (7 days)")
    return value


def _event_names(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one event: " + ", ".join(WEBHOOK_EVENTS))
    return names


def _connection_flags(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--base-url",
        default=environ.get("DASHSCOPE_HTTP_BASE_URL") or DEFAULT_BASE_URL,
        metavar="URL",
        help="the API base, with or without /api/v1 "
        f"(env: DASHSCOPE_HTTP_BASE_URL; default {DEFAULT_BASE_URL})",
    )
    parent.add_argument(
        "--api-key",
        default=environ.get("DASHSCOPE_API_KEY"),
        metavar="KEY",
        help="the API key (env: DASHSCOPE_API_KEY, which keeps it out of the process list)",
    )
    parent.add_argument(
        "--json", action="store_true", help="print the raw answer bodies on stdout, one JSON object a line"
    )
    return parent


def _wait_flags(*, output_help: str) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-o", "--output", type=Path, metavar="FILE", help=output_help)
    parent.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help=f"stop waiting after S seconds (exit {EXIT_TIMED_OUT}; the task goes on)",
    )
    parent.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="progress on stderr: a redrawn bar on a terminal, a line per change otherwise (default auto)",
    )
    return parent


def add_client_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], environ: Mapping[str, str]
) -> None:
    """``submit``, ``tasks`` and ``webhooks`` on the top-level parser; ``environ`` gives the SDK's
    variables."""
    connection = _connection_flags(environ)
    formatter = argparse.RawDescriptionHelpFormatter

    submit = sub.add_parser(
        "submit",
        parents=[connection, _wait_flags(output_help="download the MP4 to FILE (implies --wait)")],
        help="submit a reference-to-video task (and wait for it)",
        description="Submit a reference-to-video task and print its id. Local images are uploaded first\n"
        "(the temporary-upload flow, oss://); http(s) and data: URLs are sent as they are.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    submit.add_argument(
        "--image",
        action="append",
        required=True,
        metavar="PATH|URL",
        help=f"a reference image, [Image 1] first (repeat, 1-{MAX_IMAGES})",
    )
    submit.add_argument("--prompt", required=True, help="the prompt; [Image N] names the N-th image")
    submit.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    submit.add_argument("--resolution", help="480P, 720P or 1080P (server default 1080P)")
    submit.add_argument(
        "--ratio", help="16:9, 9:16, 3:4, 4:3, 4:5, 5:4, 1:1, 9:21 or 21:9 (server default 16:9)"
    )
    submit.add_argument("--duration", type=int, metavar="S", help="seconds, 3-15 (server default 5)")
    submit.add_argument("--seed", type=int, metavar="N", help="0-2147483647 (default random)")
    submit.add_argument(
        "--watermark",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw the watermark (server default: on)",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the task, showing its progress")
    submit.add_argument(
        "--callback-url",
        metavar="URL",
        help="also tell URL of this task's status changes, signed as the webhooks are "
        "(this server's extension: the X-Videosynth-Callback-Url header)",
    )
    submit.set_defaults(func=cmd_submit)

    tasks = sub.add_parser(
        "tasks",
        help="list, show, cancel or wait for tasks; see and repeat their webhook deliveries",
        description="List, show, cancel or wait for tasks; see and repeat their webhook deliveries.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    listing = tasks_sub.add_parser(
        "list",
        parents=[connection],
        help="list tasks (the last 24 h unless --start-time/--end-time)",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    listing.add_argument("--status", type=str.upper, choices=LIST_STATUSES)
    listing.add_argument("--model", help="only this model's tasks")
    listing.add_argument("--page", type=_positive_int, metavar="N", help="page number (default 1)")
    listing.add_argument("--page-size", type=_positive_int, metavar="N", help="tasks a page (default 10)")
    listing.add_argument("--start-time", metavar="YYYYMMDDhhmmss", help="created at or after")
    listing.add_argument("--end-time", metavar="YYYYMMDDhhmmss", help="created at or before")
    get = tasks_sub.add_parser(
        "get", parents=[connection], help="show one task", epilog=EPILOG, formatter_class=formatter
    )
    get.add_argument("task_id", metavar="ID")
    cancel = tasks_sub.add_parser(
        "cancel", parents=[connection], help="cancel a task", epilog=EPILOG, formatter_class=formatter
    )
    cancel.add_argument("task_id", metavar="ID")
    wait = tasks_sub.add_parser(
        "wait",
        parents=[connection, _wait_flags(output_help="download the MP4 to FILE")],
        help="wait for a task, showing its progress",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    wait.add_argument("task_id", metavar="ID")
    deliveries = tasks_sub.add_parser(
        "deliveries",
        parents=[connection],
        help="list a task's webhook deliveries: event, status, tries, the last answer, the target",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    deliveries.add_argument("task_id", metavar="ID")
    redeliver = tasks_sub.add_parser(
        "redeliver",
        parents=[connection],
        help="send a delivery again (queued now, with a fresh schedule of tries)",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    redeliver.add_argument("task_id", metavar="ID")
    redeliver.add_argument("delivery_id", metavar="DELIVERY_ID")
    tasks.set_defaults(func=cmd_tasks)

    webhooks = sub.add_parser(
        "webhooks",
        help="the account's webhooks and their signing secret (this server's extension)",
        description="The account's webhooks: URLs told of its tasks' status changes, each request signed\n"
        "with the account's secret (Standard Webhooks). This server's extension: the hosted service\n"
        "configures its events in its console.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    add = webhooks_sub.add_parser(
        "add",
        parents=[connection],
        help="add a webhook and print it (id, url, format, events)",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    add.add_argument("url", metavar="URL", help="the http(s) URL to POST the events to")
    add.add_argument(
        "--events",
        type=_event_names,
        metavar="E1,E2",
        help=f"only these events, of {', '.join(WEBHOOK_EVENTS)} (default: all the format sends; "
        "dashscope-event sends no running)",
    )
    add.add_argument(
        "--format",
        choices=WEBHOOK_FORMATS,
        help="standard (default) or dashscope-event (the hosted service's event body)",
    )
    add.add_argument(
        "--no-result",
        action="store_true",
        help="leave the task's result out of the body (dashscope-event only)",
    )
    webhooks_sub.add_parser(
        "list",
        parents=[connection],
        help="list the account's webhooks",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    remove = webhooks_sub.add_parser(
        "remove", parents=[connection], help="remove a webhook", epilog=EPILOG, formatter_class=formatter
    )
    remove.add_argument("webhook_id", metavar="ID")
    secret = webhooks_sub.add_parser(
        "secret",
        parents=[connection],
        help="print the signing secret (whsec_...) alone on stdout; --rotate makes a new one",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    secret.add_argument(
        "--rotate",
        action="store_true",
        help="make a new secret; the previous one also signs for the overlap (stderr says until when)",
    )
    secret.add_argument(
        "--overlap",
        type=_overlap_seconds,
        metavar="S",
        help=f"with --rotate: seconds the previous secret goes on signing, 0-{MAX_OVERLAP_S} "
        "(server default 24 h)",
    )
    webhooks.set_defaults(func=cmd_webhooks)
