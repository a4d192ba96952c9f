"""A throwaway S3 server for tests: moto's server on loopback, on a free port, with one bucket, and
the AWS_* variables the lake reads pointing at it (test_lake_s3.py, test_faults.py)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
BUCKET = "zipp"
# Variables of the machine's own AWS setup that would send the lake somewhere else.
CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class MotoS3:
    client: object  # a boto3 S3 client for the server
    env: dict[str, str]  # the AWS_* variables set while it runs (for child processes too)
    endpoint: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3(log: Path, patch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    """moto's server with the bucket `zipp`, its output in `log`; `patch` sets the AWS_* variables
    (undone by its owner). Skips the test when moto_server is not installed beside this Python."""
    if not MOTO_SERVER.exists():
        pytest.skip(f"moto_server not found beside {sys.executable} (install moto[server] from requirements.lock)")
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_CONDITIONAL_PUT": "etag"}
    for name in CLEARED:
        patch.delenv(name, raising=False)
    for name, value in env.items():
        patch.setenv(name, value)
    with log.open("w") as output:
        server = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=output,
                                  stderr=subprocess.STDOUT)
        try:
            client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.create_bucket(Bucket=BUCKET)
                    break
                except Exception:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield MotoS3(client, env, endpoint)
        finally:
            server.terminate()
            server.wait(timeout=10)


def upload(client, folder: Path, prefix: str) -> None:
    """Every file under `folder` to s3://zipp/<prefix>/ (a local lake copied into the bucket)."""
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
