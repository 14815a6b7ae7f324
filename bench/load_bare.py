"""The bare FastAPI app that `bench/load.py` measures our API against.

Same framework (FastAPI on uvicorn, one worker, started with the same `uvicorn.Config` settings as
`videosynth serve`: access log off, uvicorn's automatic choice of httptools and uvloop), the same JSON
parsing of the submit body (`json.loads` of the raw body), and response bodies of the same shape as ours:
submit answers `{"request_id", "output": {"task_status": "PENDING", "task_id"}}` and query answers a
SUCCEEDED task body (`api/wire.py task_output`), both as a `JSONResponse` with an `x-request-id` header.
What it leaves out is exactly our own work: authentication, validation, the store, URL signing and the
time formatting.

    .venv/bin/python bench/load_bare.py --port 8001
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py shadows the stdlib `queue` for scripts run from this directory: drop it from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SUBMIT_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
PROMPT = "[Image 1]中身着红色旗袍的女性站在老上海的街头，她手中的折扇缓缓打开。"

app = FastAPI()


def respond(body: dict[str, Any]) -> JSONResponse:
    rid = str(uuid.uuid4())
    return JSONResponse({"request_id": rid, **body}, headers={"x-request-id": rid})


@app.post(SUBMIT_PATH)
async def submit(request: Request) -> JSONResponse:
    body = json.loads(await request.body())
    if not isinstance(body, dict):
        return JSONResponse({"code": "InvalidParameter"}, status_code=400)
    return respond({"output": {"task_status": "PENDING", "task_id": str(uuid.uuid4())}})


@app.get("/api/v1/tasks/{task_id}")
async def query(task_id: str) -> JSONResponse:
    return respond(
        {
            "output": {
                "task_id": task_id,
                "task_status": "SUCCEEDED",
                "submit_time": "2026-11-25 10:00:00.123",
                "scheduled_time": "2026-11-25 10:00:00.125",
                "end_time": "2026-11-25 10:00:00.921",
                "orig_prompt": PROMPT,
                "progress": 100,
                "video_url": f"http://127.0.0.1:8000/files/results/{task_id}-1.mp4"
                "?Expires=1795600000&Signature=3q2-7wVN2cjNk1yE_uKhzQ7Qe9kvN8l3iRc3Xk0aP8Y",
            },
            "usage": {
                "duration": 3,
                "input_video_duration": 0,
                "output_video_duration": 3,
                "video_count": 1,
                "SR": 720,
                "ratio": "16:9",
            },
        }
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    # The same Config as `videosynth serve` (cli.py cmd_serve): one worker, access log off, http/loop auto.
    uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    ).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
