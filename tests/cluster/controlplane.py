"""Start and stop the test control plane: etcd, kube-apiserver, controller manager, scheduler, node agent.

Used three ways: `scripts/with-cluster CMD...` (runs CMD against a fresh cluster, then tears it down),
`make cluster` (an interactive shell), and the pytest session fixture in tests/conftest.py.

Every start gets fresh state in a temporary directory, free loopback ports and new credentials. Users
(static bearer tokens, RBAC on): `admin` (system:masters), `alice@example.com` (managers, kubemill-users),
`bob@example.com` and `mallory@example.com` (kubemill-users).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pki
import realnode

REPO = Path(__file__).resolve().parents[2]
NODE_NAME = "kubemill-node"
SERVICE_CIDR = "10.0.0.0/24"


@dataclass(frozen=True)
class User:
    key: str  # short name used for kubeconfig files and fixtures
    name: str
    groups: tuple[str, ...] = ()


USERS = (
    User("admin", "admin", ("system:masters",)),
    User("alice", "alice@example.com", ("managers", "kubemill-users")),
    User("bob", "bob@example.com", ("kubemill-users",)),
    User("mallory", "mallory@example.com", ("kubemill-users",)),
)
_SYSTEM_USERS = (
    User("controller-manager", "system:kube-controller-manager"),
    User("scheduler", "system:kube-scheduler"),
    User("node", f"system:node:{NODE_NAME}", ("system:nodes",)),
)


class ControlPlaneError(RuntimeError):
    """The control plane could not start; the message carries the failing component's log tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def build_binaries(kubelet: bool = False) -> Path:
    out = subprocess.run(
        [str(REPO / "tests/cluster/build.sh"), *(["kubelet"] if kubelet else [])],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class ControlPlane:
    bin_dir: Path
    state: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kubemill-cluster-")))
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    api_port: int = 0
    node_port: int = 0
    real_node: bool = False
    node: realnode.RealNode | None = None

    # -- paths a caller uses -------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfigs" / "admin.kubeconfig"

    @property
    def kubeconfigs(self) -> Path:
        return self.state / "kubeconfigs"

    @property
    def ca(self) -> Path:
        return self.state / "pki" / "ca.crt"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBEMILL_KUBECONFIGS"] = str(self.kubeconfigs)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            self._start(deadline)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: float) -> None:
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        pkidir = self.state / "pki"
        pkidir.mkdir()
        ca = pki.CertificateAuthority(pkidir)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            hosts=(
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.0.0.1",
            ),
        )
        kubelet_client = ca.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organizations=("kubeadm:cluster-admins",),
            client=True,
        )
        node_serving = ca.issue(
            "node", f"system:node:{NODE_NAME}", server=True, hosts=("127.0.0.1", realnode.NODE_IP)
        )
        sa = pki.service_account_key(pkidir)
        self._write_tokens()

        etcd_port, etcd_peer = free_port(), free_port()
        self.api_port, self.node_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.state / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", deadline, lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"))

        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert_path}",
                f"--token-auth-file={self.state / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={ca.cert_path}",
                "--kubelet-preferred-address-types=InternalIP",
                # Webhooks through their Service's endpoints: no kube-proxy routes a ClusterIP here.
                *(["--enable-aggregator-routing=true"] if self.real_node else []),
                "--profiling=false",
                "--v=0",
            ],
        )
        self._write_kubeconfigs()
        self._wait("kube-apiserver", deadline, lambda: self._api_ok("/readyz"))

        kcm_kubeconfig = self._kubeconfig_file("controller-manager")
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={ca.cert_path}",
                "--controllers=*",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--concurrent-job-syncs=10",
                "--concurrent-cron-job-syncs=5",
                "--v=0",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={self._kubeconfig_file('scheduler')}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=0",
            ],
        )
        if self.real_node:
            self._start_real_node(ca.cert_path, node_serving, deadline)
        else:
            self._start_node_agent(ca.cert_path, node_serving)
        self._wait(
            "kube-controller-manager",
            deadline,
            lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
        )
        self._wait("kubelet" if self.real_node else "node-agent", deadline, self._node_ready)

    def _start_real_node(self, ca_cert: Path, node_serving: pki.Pair, deadline: float) -> None:
        self.node = realnode.RealNode(
            state=self.state / "node",
            bin_dir=self.bin_dir,
            node_name=NODE_NAME,
            port=self.node_port,
            api_port=self.api_port,
            kubeconfig=self._kubeconfig_file("node"),
            client_ca=ca_cert,
            serving_cert=node_serving.cert,
            serving_key=node_serving.key,
        )
        self.node.start(self._spawn, lambda what, check: self._wait(what, deadline, check))
        self._wait("containerd", deadline, self.node.containerd_ready)
        started = time.monotonic()
        self.node.import_images(realnode_images())
        print(f"[with-cluster] images imported in {time.monotonic() - started:.1f}s", file=sys.stderr)
        self.node.start_kubelet(self._spawn)

    def _start_node_agent(self, ca_cert: Path, node_serving: pki.Pair) -> None:
        self._spawn(
            "node-agent",
            [
                sys.executable,
                str(REPO / "tests/cluster/nodeagent.py"),
                f"--kubeconfig={self._kubeconfig_file('node')}",
                f"--node-name={NODE_NAME}",
                f"--port={self.node_port}",
                f"--cert={node_serving.cert}",
                f"--key={node_serving.key}",
                f"--client-ca={ca_cert}",
                f"--state-dir={self.state / 'node'}",
                f"--api-server=127.0.0.1:{self.api_port}",
                *(f"--image-mount={m}" for m in runner_image_mounts()),
                *(f"--extra-path={d}" for d in node_extra_path()),
                f"--keep-visible={REPO}",
                *(f"--keep-visible={d}" for d in node_extra_path() if not Path(d).is_relative_to(REPO)),
            ],
        )

    def stop(self) -> None:
        try:
            if self.node is not None:
                self._stop_real_node_pods()
        finally:
            self._stop_processes()

    def _stop_processes(self) -> None:
        for name in reversed(list(self.processes)):
            proc = self.processes.pop(name)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.node is not None:
            self.node.cleanup_host()
            self.node = None
        if os.environ.get("KUBEMILL_KEEP_CLUSTER_STATE"):
            print(f"cluster state kept in {self.state}", file=sys.stderr)
        else:
            shutil.rmtree(self.state, ignore_errors=True)

    # -- internals ------------------------------------------------------------------------------------------

    def _stop_real_node_pods(self) -> None:
        """Pods go through the kubelet first (it tears their sandboxes and networks down, runc drops their
        cgroups), then whatever is left through containerd; the node's PID 1 goes last (stop's loop)."""
        assert self.node is not None
        node = self.processes.get("node")
        if node is None or node.poll() is not None:
            return
        kubelet = self.processes.get("kubelet")
        if kubelet is not None and kubelet.poll() is None and self.processes["kube-apiserver"].poll() is None:
            for name in ("kube-controller-manager", "kube-scheduler"):  # no new pods while draining
                proc = self.processes.pop(name, None)
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
            kubectl = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}"]
            with contextlib.suppress(subprocess.TimeoutExpired):  # Job pods keep a finalizer: no --wait
                subprocess.run(
                    [
                        *kubectl,
                        "delete",
                        "pods",
                        "--all",
                        "-A",
                        "--grace-period=0",
                        "--force",
                        "--wait=false",
                    ],
                    capture_output=True,
                    timeout=60,
                )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.node.containers_left():
                time.sleep(0.2)
        self.node.stop_containers()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.state / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        return self.processes[name]

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.state / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait(self, name: str, deadline: float, check: Callable[[], bool]) -> None:
        while True:
            for pname, proc in self.processes.items():
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{pname} exited with code {proc.returncode} while waiting for {name}:\n"
                        f"{self.log_tail(pname)}"
                    )
            if check():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {name}:\n{self.log_tail(name)}")
            time.sleep(0.1)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def _api_get(self, path: str) -> dict[str, object] | None:
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.tokens['admin']}"}
        )
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=5) as resp:
                body = resp.read()
        except OSError:
            return None
        try:
            parsed: dict[str, object] = json.loads(body)
        except ValueError:
            return {}
        return parsed

    def _api_ok(self, path: str) -> bool:
        return self._api_get(path) is not None

    def _node_ready(self) -> bool:
        node = self._api_get(f"/api/v1/nodes/{NODE_NAME}")
        if not node:
            return False
        status = node.get("status")
        conditions = status.get("conditions", []) if isinstance(status, dict) else []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _write_tokens(self) -> None:
        rows = []
        for user in (*USERS, *_SYSTEM_USERS):
            token = secrets.token_hex(24)
            self.tokens[user.key] = token
            groups = ",".join(user.groups)
            rows.append(
                f'{token},{user.name},{user.key}-uid,"{groups}"'
                if groups
                else f"{token},{user.name},{user.key}-uid"
            )
        path = self.state / "tokens.csv"
        path.write_text("\n".join(rows) + "\n")
        path.chmod(0o600)

    def _kubeconfig_file(self, key: str) -> Path:
        return self.state / "kubeconfigs" / f"{key}.kubeconfig"

    def _write_kubeconfigs(self) -> None:
        self.kubeconfigs.mkdir(exist_ok=True)
        ca_data = base64.b64encode(self.ca.read_bytes()).decode()
        for user in (*USERS, *_SYSTEM_USERS):
            config = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "kubemill-test",
                        "cluster": {"server": self.server, "certificate-authority-data": ca_data},
                    }
                ],
                "users": [{"name": user.name, "user": {"token": self.tokens[user.key]}}],
                "contexts": [{"name": user.key, "context": {"cluster": "kubemill-test", "user": user.name}}],
                "current-context": user.key,
            }
            path = self._kubeconfig_file(user.key)
            path.write_text(json.dumps(config, indent=2))
            path.chmod(0o600)


def node_extra_path() -> list[str]:
    """Host directories that containers find on PATH: the project's virtualenv (kubemill, deno, uv) and bun.

    They stand in for what images would ship; KUBEMILL_NODE_EXTRA_PATH adds more."""
    home = Path(os.environ.get("KUBEMILL_HOME") or REPO / ".cache" / "kubemill")
    dirs = [str(REPO / ".venv" / "bin"), str(home / "runtimes" / "bun" / "node_modules" / ".bin")]
    dirs += [d for d in os.environ.get("KUBEMILL_NODE_EXTRA_PATH", "").split(os.pathsep) if d]
    return dirs


def realnode_images() -> list[str]:
    """The images the real node is given (scripts/build-images builds them): the operator and every runner."""
    version = "0.1.0"
    names = [
        "operator",
        *(f"runner-{d.name}" for d in sorted((REPO / "runner_images").iterdir()) if d.is_dir()),
    ]
    return [f"ghcr.io/kubemill/{n}:{version}" for n in names]


def runner_image_mounts() -> list[str]:
    """Runner images as the node agent sees them: the image's /opt/kubemill/runner is runner_images/<lang>.

    The Bun image also carries the Deno runner's windmill-client (its plugin finds it at ../deno)."""
    images = REPO / "runner_images"
    mounts = [
        f"*kubemill/runner-{d.name}*={d}:/opt/kubemill/runner" for d in sorted(images.iterdir()) if d.is_dir()
    ]
    mounts.append(f"*kubemill/runner-bun*={images / 'deno'}:/opt/kubemill/deno")
    return mounts


@contextlib.contextmanager
def running(bin_dir: Path | None = None, real_node: bool = False) -> Iterator[ControlPlane]:
    if real_node:
        subprocess.run([str(REPO / "scripts/build-images")], check=True)
    cp = ControlPlane(bin_dir or build_binaries(real_node), real_node=real_node)
    started = time.monotonic()
    cp.start(timeout=600.0 if real_node else 180.0)  # the real node imports every image into containerd
    print(
        f"[with-cluster] control plane ready in {time.monotonic() - started:.1f}s at {cp.server}",
        file=sys.stderr,
    )
    try:
        yield cp
    finally:
        cp.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--real-node", action="store_true", help="run pods in containers: containerd, runc, CNI and a kubelet"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run (default: $SHELL)")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] or [os.environ.get("SHELL", "/bin/bash")]
    # SIGINT, SIGTERM and SIGHUP end us like Ctrl-C so the finally-block tears the cluster down. SIGINT too:
    # started in the background by a non-interactive shell we inherit it ignored, and Python leaves it so.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    with running(real_node=args.real_node) as cp:
        try:
            return subprocess.run(command, env=cp.env()).returncode
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    raise SystemExit(main())
