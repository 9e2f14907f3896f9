"""Bench: kubemill against Argo Workflows, side by side on one control plane and one real node (`make bench`).

One fresh control plane with the real node (kubelet, containerd, runc: tests/cluster/realnode.py), and on it:

- Argo Workflows' workflow-controller (built from the Go module proxy by scripts/build-argo, never kept in
  this repository) as a host process under the admin kubeconfig, its CRDs read from the module cache
  (manifests/base/crds/minimal), its ConfigMap empty (every setting Argo's default), the executor image
  (argoexec, emissary) built with podman FROM our debootstrapped base and imported into the node's
  containerd as our own images are; the workflow pods' ServiceAccount (`default`) bound to the Role Argo's
  docs give the emissary executor (workflowtaskresults create, patch);
- the kubemill operator as the other benches run it (a host process under its own ServiceAccount), a
  RunnerPool of bench_pools.WORKERS workers and Job-per-run (bench_pools.install).

Each of RUNS rounds times, from just before the create request to the moment this process's watch sees the
run `Succeeded`:

1. a 40-step sequence of trivial Python steps: Argo a `steps` template of 40 one-step groups, each a
   container `python3 -c 'print(1)'` in our runner-python3 image; kubemill the 40-step Flow of bench_pools
   through the pool and through Jobs;
2. a 100-wide fan-out: Argo one step `withSequence: {count: 100}`; kubemill a parallel forloopflow over 100
   items (no `parallelism`), through the pool and through Jobs.

It prints the medians, kubemill / Argo for both, and every run's figure. Between runs the finished run is
deleted and the namespace waits until only the pool's workers are left. ARGO_REQUEUE_TIME (for example
`1s`) adds a second Argo pass with the controller restarted under DEFAULT_REQUEUE_TIME=that (Argo's default
is 10s), labelled as such.

    .venv/bin/python tests/bench/bench_argo.py [RUNS]       # RUNS defaults to 3
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "bench"))

import bench_flows  # noqa: E402
import bench_pools  # noqa: E402

ARGO_VERSION = os.environ.get("KUBEMILL_ARGO_VERSION", "v3.7.18")
ARGO_MODULE = "github.com/argoproj/argo-workflows/v3"
# A registry name with a dot, so containerd lists it as it is (realnode._ref); never pushed anywhere.
EXECUTOR_IMAGE = f"kubemill.test/argo/argoexec:{ARGO_VERSION}"
STEP_IMAGE = "ghcr.io/kubemill/runner-python3:0.1.0"
# The pool workers' agent is the operator's image, as the chart passes it (`--pool-agent-image`): without the
# flag the operator names ghcr.io/kubemill/kubemill:<version>, which nothing builds, and on the real node the
# workers stay in ImagePullBackOff (the node agent runs host processes, so it never noticed).
AGENT_IMAGE = "ghcr.io/kubemill/operator:0.1.0"
NS, ARGO_NS = "bench", "argo"
WIDTH = 100
TIMEOUT = 1800.0
KM = ("kubemill.dev", "v1alpha1")
ARGO = ("argoproj.io", "v1alpha1")


def build_argo() -> Path:
    """scripts/build-argo (a no-op when warm); a failure stops the bench saying why."""
    log = Path(tempfile.gettempdir()) / "kubemill-build-argo.log"
    started = time.monotonic()
    with log.open("w") as err:
        done = subprocess.run(
            [str(REPO / "scripts/build-argo")], stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise SystemExit(f"bench_argo: scripts/build-argo exited {done.returncode} (log {log}):\n{tail}")
    print(
        f"[bench_argo] Argo {ARGO_VERSION} binaries ready in {time.monotonic() - started:.1f} s", flush=True
    )
    return Path(done.stdout.strip())


def argo_source() -> Path:
    """Argo's module source in the Go module cache (scripts/build-argo fetched it): the CRDs live there."""
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{ARGO_MODULE}@{ARGO_VERSION}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(json.loads(done.stdout)["Dir"])


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True, text=True, check=False)


def executor_image(bin_dir: Path) -> str:
    """argoexec's image, as upstream's (the binary at /bin/argoexec, ENTRYPOINT argoexec), FROM our base."""
    digest = subprocess.run(
        ["sha256sum", str(bin_dir / "argoexec")], capture_output=True, text=True, check=True
    ).stdout.split()[0][:16]
    have = podman("image", "inspect", "--format", '{{index .Labels "dev.kubemill.argoexec"}}', EXECUTOR_IMAGE)
    if have.returncode == 0 and have.stdout.strip() == digest:
        return EXECUTOR_IMAGE
    bases = podman(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "localhost/kubemill/debian"
    ).stdout.split()
    if not bases:
        raise SystemExit(
            "bench_argo: no localhost/kubemill/debian base image (scripts/build-images makes it)"
        )
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(bin_dir / "argoexec", Path(ctx) / "argoexec")
        (Path(ctx) / "Dockerfile").write_text(
            f'FROM {bases[0]}\nCOPY argoexec /bin/argoexec\nENTRYPOINT ["argoexec"]\n'
        )
        built = podman(
            "build",
            "-q",
            "--pull=never",
            "--label",
            f"dev.kubemill.argoexec={digest}",
            "-t",
            EXECUTOR_IMAGE,
            ctx,
        )
        if built.returncode != 0:
            raise SystemExit(f"bench_argo: podman build of {EXECUTOR_IMAGE} failed:\n{built.stderr}")
    return EXECUTOR_IMAGE


class Controller:
    """workflow-controller as a host process (as `make start` in Argo's repo runs it), admin's kubeconfig with
    the `argo` namespace as its own (where its ConfigMap and leader-election Lease live)."""

    def __init__(self, bin_dir: Path, cluster: Any, workdir: Path) -> None:
        self.bin_dir, self.cluster, self.workdir = bin_dir, cluster, workdir
        self.kubeconfig = workdir / "argo.kubeconfig"
        shutil.copy(cluster.kubeconfig_for("admin"), self.kubeconfig)
        cluster.kubectl(
            "config", f"--kubeconfig={self.kubeconfig}", "set-context", "--current", "--namespace=argo"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / "workflow-controller.log"

    def start(self, requeue: str | None = None) -> None:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), LEADER_ELECTION_IDENTITY="bench")
        if requeue:
            env["DEFAULT_REQUEUE_TIME"] = requeue
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(
                f"\n===== start {self.starts} (DEFAULT_REQUEUE_TIME={requeue or 'default'}) =====\n".encode()
            )
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.bin_dir / "workflow-controller"), f"--executor-image={EXECUTOR_IMAGE}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def install_argo(cluster: Any, source: Path) -> None:
    cluster.kubectl("create", "namespace", ARGO_NS)
    cluster.kubectl("create", "-k", str(source / "manifests/base/crds/minimal"))  # its kustomization
    for crd in sorted((source / "manifests/base/crds/minimal").glob("argoproj.io_*.yaml")):
        name = crd.name.removeprefix("argoproj.io_").removesuffix(".yaml") + ".argoproj.io"
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    cluster.apply(  # Argo's manifests/base/workflow-controller/workflow-controller-configmap.yaml: no data
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "workflow-controller-configmap", "namespace": ARGO_NS},
        }
    )
    # Argo's manifests/quick-start/base/executor/emissary/executor-role.yaml, bound to the pods' account.
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "executor", "namespace": NS},
            "rules": [
                {
                    "apiGroups": ["argoproj.io"],
                    "resources": ["workflowtaskresults"],
                    "verbs": ["create", "patch"],
                }
            ],
        }
    )
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "executor-default", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "executor"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NS}],
        }
    )


def step_template() -> dict[str, Any]:
    return {"name": "step", "container": {"image": STEP_IMAGE, "command": ["python3", "-c", "print(1)"]}}


def argo_sequence(name: str) -> dict[str, Any]:
    steps = [[{"name": f"s{i}", "template": "step"}] for i in range(bench_flows.STEPS)]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "steps": steps}, step_template()]},
    }


def argo_fanout(name: str, width: int = WIDTH) -> dict[str, Any]:
    fan = [[{"name": "fan", "template": "step", "withSequence": {"count": str(width)}}]]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "steps": fan}, step_template()]},
    }


def install_fanout_flows(cluster: Any) -> None:
    """The kubemill fan-out: a parallel forloopflow over flow_input.items, one step script per item."""
    for name, path in (("fan", "f/bench/step"), ("fan-pool", "f/bench/step_pool")):
        loop = {
            "id": "each",
            "value": {
                "type": "forloopflow",
                "iterator": {"type": "javascript", "expr": "flow_input.items"},
                "parallel": True,
                "modules": [
                    {
                        "id": "work",
                        "value": {
                            "type": "script",
                            "path": path,
                            "input_transforms": {
                                "n": {"type": "javascript", "expr": "flow_input.iter.value"}
                            },
                        },
                    }
                ],
            },
        }
        cluster.apply(
            {
                "apiVersion": "kubemill.dev/v1alpha1",
                "kind": "Flow",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"path": f"f/bench/{name.replace('-', '_')}", "value": {"modules": [loop]}},
            }
        )


def flowrun(name: str, flow_path: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"flowPath": flow_path, "args": args},
    }


def timed(
    api: Any, ref: tuple[str, str], plural: str, manifest: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    """Seconds from just before the create to the moment a watch sees the object's phase `Succeeded`, and the
    status it had then."""
    import kubernetes

    name = manifest["metadata"]["name"]
    seen: dict[str, Any] = {}
    done = threading.Event()
    watch = kubernetes.watch.Watch()

    def follow() -> None:
        for event in watch.stream(
            api.list_namespaced_custom_object,
            *ref,
            NS,
            plural,
            field_selector=f"metadata.name={name}",
            timeout_seconds=int(TIMEOUT),
        ):
            status = event["object"].get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed", "Error", "Cancelled"):
                seen.update(at=time.perf_counter(), status=status)
                done.set()
                watch.stop()
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.5)  # the watch is open before the object exists
    started = time.perf_counter()
    api.create_namespaced_custom_object(*ref, NS, plural, manifest)
    if not done.wait(TIMEOUT):
        raise SystemExit(f"{plural}/{name}: not finished after {TIMEOUT:.0f} s")
    if seen["status"]["phase"] != "Succeeded":
        raise SystemExit(
            f"{plural}/{name} ended {seen['status']['phase']}: {json.dumps(seen['status'])[:3000]}"
        )
    return float(seen["at"] - started), seen["status"]


def quiesce(cluster: Any, kind: str, name: str) -> None:
    """Delete the finished run, then wait until only the pool's workers' pods are left in the namespace."""
    cluster.kubectl("delete", kind, name, "-n", NS, "--wait=true", timeout=600)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pods = cluster.get("pods", "-n", NS)["items"]
        others = [
            p
            for p in pods
            if not any(o["kind"] == "ReplicaSet" for o in p["metadata"].get("ownerReferences", []))
        ]
        if not others:
            return
        time.sleep(1)
    print(f"[bench_argo] {len(others)} pods still there after deleting {kind}/{name}", file=sys.stderr)


def argo_pass(cluster: Any, api: Any, runs: range, label: str) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"seq": [], "fan": []}
    for run in runs:
        for what, make, pods in (("seq", argo_sequence, bench_flows.STEPS), ("fan", argo_fanout, WIDTH)):
            name = f"{label}-{what}-{run}"
            wall, status = timed(api, ARGO, "workflows", make(name))
            ran = [
                n
                for n in status.get("nodes", {}).values()
                if n["type"] == "Pod" and n["phase"] == "Succeeded"
            ]
            if len(ran) != pods:
                raise SystemExit(f"workflow {name}: {len(ran)} pods succeeded, not {pods}")
            figures[what].append(wall)
            print(f"argo ({label}) {what} run {run}: {wall:.1f} s", flush=True)
            quiesce(cluster, "workflow", name)
    return figures


def kubemill_round(cluster: Any, api: Any, run: int, figures: dict[str, list[float]]) -> None:
    items = {"items": list(range(WIDTH))}
    fanned = [i + 1 for i in range(WIDTH)]  # each step returns n + 1
    for key, flow_path, args, result in (
        ("pool seq", "f/bench/forty_pool", {}, bench_flows.STEPS),
        ("job seq", "f/bench/forty", {}, bench_flows.STEPS),
        ("pool fan", "f/bench/fan_pool", items, fanned),
        ("job fan", "f/bench/fan", items, fanned),
    ):
        name = f"{key.replace(' ', '-')}-{run}"
        wall, status = timed(api, KM, "flowruns", flowrun(name, flow_path, args))
        if status.get("result") != result:
            raise SystemExit(f"flowrun {name}: result {json.dumps(status.get('result'))[:300]}, not {result}")
        figures.setdefault(key, []).append(wall)
        print(f"kubemill {key} run {run}: {wall:.1f} s", flush=True)
        quiesce(cluster, "flowrun", name)


def warm(cluster: Any, api: Any) -> None:
    """One run of each kind first, not measured: the images' first start (page cache), first claims."""
    timed(api, ARGO, "workflows", argo_fanout("warm-argo", 1))
    quiesce(cluster, "workflow", "warm-argo")
    for name, path in (("warm-job", "f/bench/step"), ("warm-pool", "f/bench/step_pool")):
        body = {"apiVersion": "kubemill.dev/v1alpha1", "kind": "ScriptRun", "metadata": {"name": name}}
        timed(api, KM, "scriptruns", {**body, "spec": {"scriptPath": path, "args": {}}})
        quiesce(cluster, "scriptrun", name)


def report(
    runs: int,
    argo: dict[str, list[float]],
    kubemill: dict[str, list[float]],
    lowered: dict[str, list[float]],
    requeue: str | None,
) -> None:
    med = {k: statistics.median(v) for k, v in kubemill.items()}
    amed = {k: statistics.median(v) for k, v in argo.items()}
    print(
        f"== kubemill vs Argo Workflows {ARGO_VERSION} on one control plane and the real node, "
        f"medians of {runs} runs"
    )
    print(f"{'':34} | {bench_flows.STEPS}-step sequence | {WIDTH}-wide fan-out")
    rows = [
        (f"Argo (defaults, {runs} runs)", amed["seq"], amed["fan"]),
        (f"kubemill RunnerPool ({bench_pools.WORKERS} workers)", med["pool seq"], med["pool fan"]),
        ("kubemill Job per run", med["job seq"], med["job fan"]),
    ]
    if lowered:
        rows.insert(
            1,
            (
                f"Argo (DEFAULT_REQUEUE_TIME={requeue})",
                statistics.median(lowered["seq"]),
                statistics.median(lowered["fan"]),
            ),
        )
    for label, seq, fan in rows:
        print(f"{label:34} | {seq:13.1f} s  | {fan:13.1f} s")
    for label, key in (("RunnerPool", "pool"), ("Job per run", "job")):
        print(
            f"kubemill {label} / Argo: sequence {med[f'{key} seq'] / amed['seq']:.2f}x, "
            f"fan-out {med[f'{key} fan'] / amed['fan']:.2f}x (below 1 = kubemill faster)"
        )
    print(
        "every run (s): " + json.dumps({"argo": argo, "argo-lowered-requeue": lowered, "kubemill": kubemill})
    )


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # tear the control plane down on any of them
        signal.signal(sig, signal.default_int_handler)
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    requeue = os.environ.get("ARGO_REQUEUE_TIME")
    import kubernetes

    from tests.conftest import Cluster, controlplane
    from tests.operator_harness import Operator, install_operator_identity

    bin_dir = build_argo()
    source = argo_source()
    with controlplane.running(real_node=True) as plane:
        assert plane.node is not None
        cluster = Cluster(plane)
        workdir = Path(tempfile.mkdtemp(prefix="kubemill-bench-argo-"))
        plane.node.import_images([executor_image(bin_dir)])
        operator = Operator(cluster, install_operator_identity(cluster, workdir), workdir)
        operator.extra_args = (*operator.extra_args, f"--pool-agent-image={AGENT_IMAGE}")
        operator.start()
        controller = Controller(bin_dir, cluster, workdir)
        try:
            bench_pools.install(cluster, NS, max_queued=WIDTH * 4)
            install_fanout_flows(cluster)
            install_argo(cluster, source)
            controller.start()
            api = kubernetes.client.CustomObjectsApi(cluster.api_client("admin"))
            warm(cluster, api)
            kubemill: dict[str, list[float]] = {}
            argo: dict[str, list[float]] = {"seq": [], "fan": []}
            for run in range(runs):  # interleaved, so a change of the machine's load falls on both
                one = argo_pass(cluster, api, range(run, run + 1), "argo")
                argo["seq"] += one["seq"]
                argo["fan"] += one["fan"]
                kubemill_round(cluster, api, run, kubemill)
            lowered: dict[str, list[float]] = {}
            if requeue:
                controller.stop()
                controller.start(requeue)
                lowered = argo_pass(cluster, api, range(runs), f"requeue-{requeue}")
        except BaseException:
            print(operator.log()[-3000:], file=sys.stderr)
            print(controller.log()[-5000:], file=sys.stderr)
            raise
        finally:
            controller.stop()
            operator.stop()
    report(runs, argo, kubemill, lowered, requeue)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
