"""The test workspace storage: a real S3-compatible server, SeaweedFS's `weed mini` built from the Go module
proxy by scripts/build-objectstore (cached under ~/.cache/kubemill/objectstore), on 127.0.0.1 with free
ports, one bucket, one identity, its data in a temporary directory removed afterwards.

The `object_store` fixture (tests/conftest.py) starts it once per session, on first use; a server that
cannot start is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUCKET = "kubemill"
GRPC_OFFSET = 10000  # weed's gRPC port for each service is its HTTP port plus this


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    access_key: str
    secret_key: str

    def value(self) -> dict[str, Any]:
        """A Resource of type s3's `spec.value` (the secret key comes from a Secret)."""
        host, port = self.endpoint.removeprefix("http://").split(":")
        return {
            "bucket": self.bucket,
            "region": "us-east-1",
            "endPoint": host,
            "port": int(port),
            "useSSL": False,
            "pathStyle": True,
            "accessKeyId": self.access_key,
        }

    def settings(self) -> dict[str, Any]:
        return {**self.value(), "secretKey": self.secret_key}


def binary() -> Path:
    done = subprocess.run(
        [str(REPO / "scripts" / "build-objectstore")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-objectstore failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """`count` ports p that are free, with p + GRPC_OFFSET free too."""
    found: list[int] = []
    while len(found) < count:
        p = random.randint(20000, 29999)
        if p not in found and _free(p) and _free(p + GRPC_OFFSET):
            found.append(p)
    return found


def client(store: ObjectStore) -> Any:
    """The runners' own S3 client (runner_images/python3/wmill/s3.py) for this store."""
    import sys

    sys.path.insert(0, str(REPO / "runner_images" / "python3"))
    from wmill import s3

    return s3.Client(store.settings())


def ready(store: ObjectStore) -> bool:
    """The S3 API takes a signed PUT into the bucket (weed creates the bucket before it serves)."""
    probe = client(store)  # puts the runners' directory on sys.path
    from wmill import s3

    try:
        probe.put("ready-probe", b"ok")
    except s3.S3Error:
        return False
    return True


@contextlib.contextmanager
def running(timeout: float = 120) -> Iterator[ObjectStore]:
    weed = binary()
    workdir = Path(tempfile.mkdtemp(prefix="kubemill-s3-"))
    s3, master, volume, filer, admin = _ports(5)
    store = ObjectStore(
        f"http://127.0.0.1:{s3}", BUCKET, "kubemill" + secrets.token_hex(4), secrets.token_hex(16)
    )
    config = {
        "identities": [
            {
                "name": "kubemill",
                "credentials": [{"accessKey": store.access_key, "secretKey": store.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(config))
    (workdir / "data").mkdir()
    command = [
        str(weed),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.config={workdir / 's3.json'}",
        f"-bucket={BUCKET}",
        f"-admin.port={admin}",
        "-admin.port.legacy=0",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # no traffic off this machine
    ]
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready(store):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed mini did not serve S3 on {store.endpoint} within {timeout:.0f}s:\n"
                    + (workdir / "weed.log").read_text(errors="replace")[-4000:]
                )
            time.sleep(0.3)
        yield store
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
