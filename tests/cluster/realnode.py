"""The real node: containerd (Debian's package, CRI plugin), runc, a CNI bridge and a kubelet built from the
same k8s.io/kubernetes wrapper module as the control plane (tests/cluster/build.sh kubelet).

A second way to run the test control plane's pods (`scripts/with-cluster --real-node CMD`, the `real_node`
pytest fixture): real containers from the images scripts/build-images makes, instead of the node agent's host
processes.

The node is a machine made of namespaces, as a kind node is a container: `unshare` gives it its own mount, PID
and network namespaces, whose first process (a static reaper, the pause binary) holds them. containerd, the
kubelet and every container run inside. So nothing the node does reaches the host:

- its /run, /var/lib and /var/log are its own (a tmpfs and two directories of the state dir bound there):
  containerd's and runc's state, the kubelet's root, pod logs, CNI's cache and the pods' network namespaces;
- the kernel settings the kubelet insists on (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...;
  `protectKernelDefaults: false`, it sets them) are files of the state dir bound over /proc/sys in the node's
  mount namespace: the kubelet writes them, the host's values never change;
- its network is its own: the CNI bridge, the pods' veths, ip_forward and the one iptables rule (the
  `kubernetes` Service's ClusterIP to the API server) live in the node's network namespace. One veth pair
  joins it to the host (10.213.255.1 host side, 10.213.255.2 the node's InternalIP, a host route to the pod
  subnet so the API server reaches the approvals webhook) and goes away with the namespace;
- the API server stays on the host's 127.0.0.1: a small proxy (`realnode.py proxy`) listens in the node's
  namespace on the API server's port and connects on the host's.

Teardown: pods are deleted through the API (the kubelet stops them, runc removes their cgroups), then the
reaper is killed, which ends every process in the node's PID namespace; the mount and network namespaces go
with it. What cannot live in a namespace (cgroup v1 directories, shared by the host) is removed if a container
left it. `host_state()` is what a test compares before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
POD_SUBNET = "10.213.0.0/24"
POD_GATEWAY = "10.213.0.1"
HOST_VETH, NODE_VETH = "kmnode0", "eth0"
HOST_IP, NODE_IP = "10.213.255.1", "10.213.255.2"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"  # Debian's path, the images' too
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service (controlplane.SERVICE_CIDR's first address)
PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
}
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubemill" / "realnode"
# The kernel settings the kubelet's container manager sets (pkg/kubelet/cm setupKernelTunables).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Host places a kubelet, containerd or CNI writes by default; the node has its own, these must not change.
HOST_PATHS = (
    "/run/containerd",
    "/run/netns",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/etc/cni/net.d",
    "/opt/containerd",
)
# The host's only rules: the node's egress (a user's kind node reaches registries: pods install a script's
# dependencies), added at start, deleted at teardown (and before a start, if a killed run left them).
HOST_RULES = (
    ("-t", "nat", "POSTROUTING", "-s", f"{NODE_IP}/32", "!", "-o", HOST_VETH, "-j", "MASQUERADE"),
    ("-t", "filter", "FORWARD", "-i", HOST_VETH, "-j", "ACCEPT"),
    ("-t", "filter", "FORWARD", "-o", HOST_VETH, "-j", "ACCEPT"),
)
NODE_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "kubelet", "pause")

PAUSE_GO = """// pause: the pod sandbox process and the real node PID 1: sleeps until a signal, reaps children
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsigs := make(chan os.Signal, 1)
\tsignal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range sigs {
\t\tif s == syscall.SIGCHLD {
\t\t\tfor {
\t\t\t\tvar st syscall.WaitStatus
\t\t\t\tif pid, _ := syscall.Wait4(-1, &st, syscall.WNOHANG, nil); pid <= 0 {
\t\t\t\t\tbreak
\t\t\t\t}
\t\t\t}
\t\t\tcontinue
\t\t}
\t\tos.Exit(0)
\t}
}
"""

# Run as PID 1 of the node's namespaces (sh -c SETUP setup STATE API_PORT STORE PAUSE), then exec the reaper.
SETUP = f"""set -eu
state=$1 api_port=$2 store=$3 pause=$4
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p "$state/var-lib" "$state/var-log" "$state/sysctl"
mount --bind "$state/var-lib" /var/lib
mount --bind "$state/var-log" /var/log
mkdir -p /var/lib/containerd
mount --bind "$store" /var/lib/containerd
for f in {" ".join(KUBELET_SYSCTLS)}; do
  copy="$state/sysctl/$(echo "$f" | tr / .)"
  cat "/proc/sys/$f" >"$copy"
  mount --bind "$copy" "/proc/sys/$f"
done
ip link set lo up
echo 1 >/proc/sys/net/ipv4/ip_forward
iptables -t nat -A PREROUTING -d {SERVICE_IP}/32 -p tcp --dport 443 \\
  -j DNAT --to-destination {POD_GATEWAY}:"$api_port"
iptables -t nat -A POSTROUTING -s {POD_SUBNET} ! -d {POD_SUBNET} -j MASQUERADE
touch "$state/namespaces-ready"
exec "$pause"
"""


Spawn = Callable[[str, list[str]], "subprocess.Popen[bytes]"]


class RealNodeError(RuntimeError):
    pass


def ensure_packages() -> None:
    """containerd, runc, iptables and the CNI plugins from Debian; installed when missing (as root)."""
    missing = sorted(
        {pkg for path, pkg in PACKAGES.items() if not (shutil.which(path) or Path(path).exists())}
    )
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RealNodeError(
            f"the real node needs {', '.join(missing)} (install them with your package manager)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], env=env, check=True, capture_output=True
        )


def podman(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "--runtime", "runc", *args], text=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def pause_binary() -> Path:
    """The static pause binary (Go), built once into the cache: the sandbox image's and the node's PID 1."""
    binary = CACHE / "pause" / "pause"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "main.go").write_text(PAUSE_GO)
        (Path(tmp) / "go.mod").write_text("module kubemill.dev/pause\n\ngo 1.22\n")
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="")
        partial = binary.with_suffix(".partial")
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."],
            cwd=tmp,
            env=env,
            check=True,
        )
        partial.rename(binary)
    return binary


def image_archives(images: list[str]) -> list[Path]:
    """OCI archives of the pause image and `images` (podman save), cached by image id."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if podman("image", "exists", PAUSE_IMAGE).returncode != 0:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(pause_binary(), Path(tmp) / "pause")
            (Path(tmp) / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
            done = podman("build", "-q", "-t", PAUSE_IMAGE, tmp)
            if done.returncode != 0:
                raise RealNodeError(f"building the pause image failed: {done.stderr}")
    archives = []
    for image in [PAUSE_IMAGE, *images]:
        inspected = podman("image", "inspect", "--format", "{{.Id}}", image)
        if inspected.returncode != 0:
            raise RealNodeError(
                f"image {image} is missing: run scripts/build-images ({inspected.stderr.strip()})"
            )
        archive = CACHE / f"{inspected.stdout.strip()[:16]}.tar"
        if not archive.exists():
            partial = archive.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            done = podman("save", "--format", "oci-archive", "-o", str(partial), image)
            if done.returncode != 0:
                raise RealNodeError(f"podman save {image} failed: {done.stderr}")
            partial.rename(archive)
        archives.append(archive)
    return archives


@dataclass
class RealNode:
    """The node's namespaces, containerd and kubelet for one control plane; `spawn(name, argv)` starts a
    supervised process (the control plane's)."""

    state: Path
    bin_dir: Path
    node_name: str
    port: int
    api_port: int
    kubeconfig: Path
    client_ca: Path
    serving_cert: Path
    serving_key: Path
    holder: subprocess.Popen[bytes] | None = None
    store_lock: int | None = None
    store: Path = Path()
    cgroups_before: frozenset[str] = frozenset()

    @property
    def pid(self) -> int:
        """The node's PID 1 as the host sees it (the child of `unshare --fork`)."""
        assert self.holder is not None
        children = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text().split()
        if not children:
            raise RealNodeError("the node's namespaces are gone (unshare has no child)")
        return int(children[0])

    def enter(self, *argv: str) -> list[str]:
        """argv run inside the node (its mount, PID and network namespaces): docker exec into a kind node."""
        return ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--net", "--", *argv]

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.enter("ctr", "--namespace", "k8s.io", *args), capture_output=True, text=True, timeout=300
        )

    def start(self, spawn: Spawn, wait: Callable[[str, Callable[[], bool]], None]) -> None:
        """The namespaces, the veth to the host, the API server proxy, then containerd."""
        ensure_packages()
        self.cgroups_before = frozenset(_cgroup_dirs())
        self.state.mkdir(parents=True, exist_ok=True)
        argv = ["unshare", "--mount", "--pid", "--net", "--fork", "--kill-child", "--mount-proc"]
        argv += ["--propagation=private", "sh", "-c", SETUP, "setup", str(self.state), str(self.api_port)]
        self.holder = spawn("node", [*argv, str(self._image_store()), str(pause_binary())])
        wait("the node's namespaces", (self.state / "namespaces-ready").exists)
        netns = f"/proc/{self.pid}/ns/net"
        _run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH, "netns", netns)
        _run("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_VETH)
        _run("ip", "link", "set", HOST_VETH, "up")
        _run(*self.enter("ip", "addr", "add", f"{NODE_IP}/30", "dev", NODE_VETH))
        _run(*self.enter("ip", "link", "set", NODE_VETH, "up"))
        _run(*self.enter("ip", "route", "add", "default", "via", HOST_IP))
        _run("ip", "route", "add", POD_SUBNET, "via", NODE_IP, "dev", HOST_VETH)
        _host_rules("-D")
        _host_rules("-A")
        spawn(
            "node-proxy",
            [sys.executable, str(Path(__file__).resolve()), "proxy", netns, str(self.api_port)],
        )
        (self.state / "etc").mkdir(exist_ok=True)
        (self.state / "etc" / "10-kubemill.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "kubemill",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        },
                        {"type": "loopback"},
                    ],
                }
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd-opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "{self._base_spec()}"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.state / "etc"}"
"""
        (self.state / "etc" / "containerd.toml").write_text(config)
        spawn(
            "containerd",
            self.enter(
                "containerd", "--config", str(self.state / "etc" / "containerd.toml"), "--log-level", "warn"
            ),
        )

    def _image_store(self) -> Path:
        """containerd's /var/lib/containerd: kept in the cache between runs (imported images stay, a warm
        start imports nothing), one node at a time (a lock); a second node at once gets a fresh one."""
        CACHE.mkdir(parents=True, exist_ok=True)
        fd = os.open(CACHE / "containerd.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            store = self.state / "containerd-root"
        else:
            self.store_lock = fd
            store = CACHE / "containerd-root"
        store.mkdir(parents=True, exist_ok=True)
        self.store = store
        return store

    def _base_spec(self) -> Path:
        """containerd's default OCI spec, plus the host's CA bundle: the node trusts what the host trusts
        (this machine's egress re-signs TLS with its own CA; pods install dependencies through it). The bundle
        is bound read-only over the images' own at the same path, and SSL_CERT_FILE names it (uv, deno)."""
        done = subprocess.run(["ctr", "oci", "spec"], capture_output=True, text=True, check=True)
        spec = json.loads(done.stdout)
        if Path(HOST_CA).is_file():
            spec["mounts"].append(
                {"destination": HOST_CA, "type": "bind", "source": HOST_CA, "options": ["rbind", "ro"]}
            )
            spec["process"]["env"] = [f"SSL_CERT_FILE={HOST_CA}"]
        path = self.state / "etc" / "base-spec.json"
        path.write_text(json.dumps(spec))
        return path

    def import_images(self, images: list[str]) -> None:
        """`ctr -n k8s.io images import` inside the node: the real node's `kind load docker-image`. An archive
        already imported into this store (its name is the image id) is not imported again."""
        self.stop_containers()  # what a killed run left in a kept store
        imported = self.store / "kubemill-imported"
        done_before = set(imported.read_text().split()) if imported.exists() else set()
        listed = set(self.ctr("images", "ls", "-q").stdout.split())
        for image, archive in zip([PAUSE_IMAGE, *images], image_archives(images), strict=True):
            if archive.name in done_before and _ref(image) in listed:
                continue
            done = self.ctr("images", "import", "--all-platforms", str(archive))
            if done.returncode != 0:
                raise RealNodeError(f"ctr images import {archive} failed: {done.stderr}")
            with imported.open("a") as f:
                f.write(archive.name + "\n")

    def containerd_ready(self) -> bool:
        return self.ctr("version").returncode == 0

    def start_kubelet(self, spawn: Spawn) -> None:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": self.port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "tlsCertFile": str(self.serving_cert),
            "tlsPrivateKeyFile": str(self.serving_key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.client_ca)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            # The kubelet sets its kernel settings: in the node's mount namespace they are files (see SETUP).
            "protectKernelDefaults": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "nodeStatusUpdateFrequency": "5s",
            "maxPods": 60,
            "localStorageCapacityIsolation": False,
        }
        (self.state / "etc" / "kubelet.json").write_text(json.dumps(config, indent=2))
        spawn(
            "kubelet",
            self.enter(
                str(self.bin_dir / "kubelet"),
                f"--config={self.state / 'etc' / 'kubelet.json'}",
                f"--kubeconfig={self.kubeconfig}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ),
        )

    def containers_left(self) -> list[str]:
        listed = self.ctr("tasks", "ls", "-q")
        return listed.stdout.split() if listed.returncode == 0 else []

    def stop_containers(self) -> None:
        """What the kubelet did not stop: kill and delete every task and container (runc drops cgroups)."""
        tasks = self.containers_left()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task)
        for task in tasks:
            self.ctr("tasks", "delete", "--force", task)
        containers = self.ctr("containers", "ls", "-q")
        for container in containers.stdout.split() if containers.returncode == 0 else []:
            self.ctr("containers", "delete", container)

    def cleanup_host(self) -> None:
        """After the node's PID 1 is gone: cgroup directories containers left (cgroup v1 is the host's), and a
        wait for the kernel to drop the namespaces' veth."""
        if self.store_lock is not None:
            os.close(self.store_lock)
            self.store_lock = None
        _host_rules("-D")
        left = set(_cgroup_dirs()) - self.cgroups_before
        for path in sorted((d for d in left if "/k8s.io" in d), key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        deadline = time.monotonic() + 30
        while Path(f"/sys/class/net/{HOST_VETH}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/sys/class/net/{HOST_VETH}").exists():
            subprocess.run(["ip", "link", "delete", HOST_VETH], capture_output=True)


def _ref(image: str) -> str:
    """The name containerd lists an image under (docker.io/library/ for short names)."""
    return (
        image if "/" in image.split(":")[0] and "." in image.split("/")[0] else f"docker.io/library/{image}"
    )


def _host_rules(action: str) -> None:
    """-A: add HOST_RULES; -D: delete every copy of them there is."""
    for table, flag, chain, *rule in HOST_RULES:
        argv = [
            "iptables",
            table,
            flag,
            action,
            chain,
            *rule,
            "-m",
            "comment",
            "--comment",
            "kubemill-realnode",
        ]
        if action == "-A":
            _run(*argv)
        else:
            while subprocess.run(argv, capture_output=True).returncode == 0:
                pass


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def _cgroup_dirs() -> list[str]:
    """Every cgroup v1/v2 directory under /sys/fs/cgroup (the host's; containers add theirs here)."""
    found = []
    root = Path("/sys/fs/cgroup")
    for controller in root.iterdir() if root.exists() else []:
        for dirpath, _, _ in os.walk(controller):
            found.append(dirpath)
    return found


def host_state() -> dict[str, object]:
    """What the real node could change on the host, for a test to compare before and after it ran."""

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            return f"<{exc.strerror}>"

    def listing(path: str) -> list[str] | None:
        p = Path(path)
        return sorted(str(x) for x in p.rglob("*")) if p.exists() else None

    def ours(line: str) -> bool:  # podman (netavark) of other work on this machine adds and drops its own
        return "NETAVARK" not in line and "netavark" not in line and not line.startswith(("#", ":"))

    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "-o", "route"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    programs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                exe = os.readlink(proc / "exe")
                if Path(exe).name in NODE_PROGRAMS:
                    programs.append(f"{proc.name} {exe}")
    return {
        "sysctls": {f: read(f"/proc/sys/{f}") for f in (*KUBELET_SYSCTLS, "net/ipv4/ip_forward")},
        "paths": {p: listing(p) for p in HOST_PATHS},
        "mounts": sorted(
            line
            for line in read("/proc/self/mounts").splitlines()
            if any(k in line for k in ("kubelet", "containerd", "netns", "kubemill", "cni"))
        ),
        "iptables": sorted(line for line in iptables.splitlines() if ours(line)),
        "routes": sorted(line for line in routes.splitlines() if "10.213." in line),
        "links": sorted(
            line.split(":")[1].strip() for line in links.splitlines() if "kmnode" in line or "cni" in line
        ),
        "cgroups": sorted(d for d in _cgroup_dirs() if "k8s.io" in d or "kubepods" in d),
        "programs": sorted(programs),
    }


# -- the API server proxy: listens in the node's network namespace, connects in the host's -------------------

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _serve(conn: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port))
    except OSError:
        conn.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
    back.start()
    _pipe(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def proxy(netns: str, port: int) -> None:
    """Accept on 0.0.0.0:port in `netns` (the kubelet on 127.0.0.1, pods through the DNAT rule), forward each
    connection to the host's 127.0.0.1:port (the API server). A thread's network namespace is its own: the
    listening socket is made in the node's, then the thread returns to the host's."""
    host = os.open("/proc/self/ns/net", os.O_RDONLY)
    node = os.open(netns, os.O_RDONLY)
    _setns(node)
    listener = socket.create_server(("0.0.0.0", port), backlog=128, reuse_port=False)
    _setns(host)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn, port), daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the real node's API server proxy")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("netns")
    p.add_argument("port", type=int)
    sub.add_parser("host-state")
    args = parser.parse_args(argv)
    if args.command == "proxy":
        proxy(args.netns, args.port)
    else:
        print(json.dumps(host_state(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
