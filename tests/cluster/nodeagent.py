"""The test node agent: a stand-in for kubelet and a container runtime on machines without containers.

It registers a Ready Node and renews its Lease, runs every pod bound to it as local processes (init containers
first, then the containers side by side), materialises the pod's volumes at their mount paths inside a private
mount namespace per container (`unshare --mount`), reports pod status as kubelet does, honours deletion and
`activeDeadlineSeconds`, and serves `/containerLogs/...` over HTTPS so `kubectl logs` works.

Images do not exist here: a container runs its `command`/`args` with the host's programs. `--image-mount
PATTERN=HOSTDIR:MOUNTPATH` makes a directory of the repository appear inside containers whose image matches
PATTERN (how runner images' files reach their pods).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.server
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from podworker import PodWorker

log = logging.getLogger("nodeagent")

LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
# What a container's PATH is when its spec sets none: an image's usual PATH (the host's interpreters live
# there; /root's pyenv does not, as non-root containers could not reach it anyway).
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ImageMount:
    pattern: str
    host_dir: str
    mount_path: str

    @classmethod
    def parse(cls, text: str) -> ImageMount:
        pattern, _, rest = text.partition("=")
        host_dir, _, mount_path = rest.rpartition(":")
        if not pattern or not host_dir or not mount_path:
            raise argparse.ArgumentTypeError(f"--image-mount wants PATTERN=HOSTDIR:MOUNTPATH, got {text!r}")
        return cls(pattern, host_dir, mount_path)


@dataclass
class Agent:
    core: kubernetes.client.CoreV1Api
    coordination: kubernetes.client.CoordinationV1Api
    node_name: str
    port: int
    state_dir: Path
    api_server: str  # host:port pods use to reach the API server (in-cluster config)
    image_mounts: list[ImageMount]
    container_path: str = IMAGE_PATH
    keep_visible: tuple[Path, ...] = ()  # host paths containers need even under a mount over their parent
    pods: dict[str, PodWorker] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)  # uids whose containers have run: never run twice
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    # -- node registration and heartbeats -------------------------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        ts = now_iso()
        conditions = [
            {
                "type": t,
                "status": "False",
                "reason": f"KubeletHas{r}",
                "message": m,
                "lastHeartbeatTime": ts,
                "lastTransitionTime": ts,
            }
            for t, r, m in (
                ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubemill node agent is posting ready status",
                "lastHeartbeatTime": ts,
                "lastTransitionTime": ts,
            }
        )
        capacity = {
            "cpu": str(os.cpu_count() or 2),
            "memory": "24Gi",
            "pods": "250",
            "ephemeral-storage": "100Gi",
        }
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kubemill node agent",
                "kernelVersion": os.uname().release,
                "kubeletVersion": "v1.34.0-kubemill",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "kubemill://local-processes",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        self.core.patch_node_status(self.node_name, {"status": self.node_status()})

    def heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                spec = {
                    "holderIdentity": self.node_name,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": now_micro(),
                }
                try:
                    self.coordination.patch_namespaced_lease(
                        self.node_name, "kube-node-lease", {"spec": spec}
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    self.coordination.create_namespaced_lease(
                        "kube-node-lease", {"metadata": {"name": self.node_name}, "spec": spec}
                    )
                self.core.patch_node_status(self.node_name, {"status": self.node_status()})
            except Exception:  # keep beating: a passing API error must not take the node down
                log.exception("heartbeat failed")
            self.stopping.wait(HEARTBEAT_SECONDS)

    # -- pods -----------------------------------------------------------------------------------------------

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                seen = set()
                for pod in listing.items:
                    raw = self.core.api_client.sanitize_for_serialization(pod)
                    seen.add(raw["metadata"]["uid"])
                    self.on_pod(raw)
                with self.lock:
                    gone = [uid for uid in self.pods if uid not in seen]
                for uid in gone:
                    self.on_pod_gone(uid)
                rv = listing.metadata.resource_version
                w = kubernetes.watch.Watch()
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=rv,
                    timeout_seconds=300,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                ):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    kind, raw = event["type"], event["raw_object"]
                    if kind == "ERROR":
                        break
                    if kind == "DELETED":
                        self.on_pod_gone(raw["metadata"]["uid"])
                    elif kind in ("ADDED", "MODIFIED"):
                        self.on_pod(raw)
            except Exception:
                if not self.stopping.is_set():
                    log.exception("pod watch failed; relisting")
                    self.stopping.wait(1)

    def on_pod(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.pods.get(uid)
            if worker is None:
                if uid in self.done or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    if pod["metadata"].get("deletionTimestamp"):
                        meta = pod["metadata"]
                        self.delete_pod(meta["namespace"], meta["name"], uid)
                    return
                worker = PodWorker(self, pod)
                self.pods[uid] = worker
                worker.start()
        if pod["metadata"].get("deletionTimestamp"):
            worker.request_delete(pod)

    def on_pod_gone(self, uid: str) -> None:
        with self.lock:
            worker = self.pods.pop(uid, None)
            self.done.add(uid)
        if worker is not None:
            worker.kill(grace=0)

    def finished(self, uid: str) -> None:
        with self.lock:
            self.pods.pop(uid, None)
            self.done.add(uid)

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """The last step of a graceful deletion, as kubelet does it: delete with grace 0 once stopped."""
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                name,
                namespace,
                body=kubernetes.client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=kubernetes.client.V1Preconditions(uid=uid)
                ),
            )

    def find_log(self, namespace: str, pod: str, container: str) -> tuple[Path, PodWorker | None] | None:
        with self.lock:
            workers = list(self.pods.values())
        for w in workers:
            if w.namespace == namespace and w.name == pod:
                return w.log_path(container), w
        # A finished pod whose worker is gone: its logs stay on disk under its uid.
        for meta in self.state_dir.glob("pods/*/meta.json"):
            info = json.loads(meta.read_text())
            if info["namespace"] == namespace and info["name"] == pod:
                return meta.parent / "logs" / f"{container}.log", None
        return None


class LogHandler(http.server.BaseHTTPRequestHandler):
    agent: Agent
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("logs: " + format, *args)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._reply(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, b"not found")
            return
        _, namespace, pod, container = parts
        query = urllib.parse.parse_qs(url.query)
        found = self.agent.find_log(namespace, pod, container)
        if found is None or not found[0].exists():
            self._reply(404, f"container {container!r} of pod {namespace}/{pod} has no logs".encode())
            return
        path, worker = found
        tail = int(query["tailLines"][0]) if "tailLines" in query else None
        limit = int(query["limitBytes"][0]) if "limitBytes" in query else None
        follow = query.get("follow", ["false"])[0] == "true"
        data = path.read_bytes()
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        if limit is not None:
            data = data[:limit]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk(data)
        if follow and worker is not None and limit is None:
            offset = path.stat().st_size
            with open(path, "rb") as f:
                f.seek(offset)
                while True:
                    chunk = f.read(65536)
                    if chunk:
                        self._chunk(chunk)
                        continue
                    if not worker.container_running(container):
                        self._chunk(f.read())
                        break
                    time.sleep(0.1)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_logs(
    agent: Agent, port: int, cert: str, key: str, client_ca: str
) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (LogHandler,), {"agent": agent})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # only the API server (kubelet client cert) may read logs
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="logs", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--client-ca", required=True)
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--api-server", required=True, help="host:port that pods use for in-cluster config")
    p.add_argument("--image-mount", action="append", default=[], type=ImageMount.parse)
    p.add_argument("--extra-path", action="append", default=[], help="directory appended to containers' PATH")
    p.add_argument(
        "--keep-visible",
        action="append",
        default=[],
        type=Path,
        help="host directory containers must see even when a volume is mounted over its parent",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=args.kubeconfig, client_configuration=config)
    config.connection_pool_maxsize = 64
    api = kubernetes.client.ApiClient(config)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(
        kubernetes.client.CoreV1Api(api),
        kubernetes.client.CoordinationV1Api(api),
        args.node_name,
        args.port,
        args.state_dir,
        args.api_server,
        args.image_mount,
        os.pathsep.join([IMAGE_PATH, *args.extra_path]),
        tuple(args.keep_visible),
    )
    serve_logs(agent, args.port, args.cert, args.key, args.client_ca)
    agent.register()
    threading.Thread(target=agent.heartbeat_loop, name="heartbeat", daemon=True).start()

    def stop(signum: int, frame: object) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watcher = threading.Thread(target=agent.watch_pods, name="pods", daemon=True)
    watcher.start()
    agent.stopping.wait()
    with agent.lock:
        workers = list(agent.pods.values())
    for w in workers:
        w.kill(grace=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
