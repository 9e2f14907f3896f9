"""The Helm chart with helm itself (built from the Go module proxy by scripts/install-tools): `helm lint` and
`helm template` for every CI values file, a server-side dry-run of each rendering on the test control plane,
then a real install on a private control plane, with the operator image's command replaced by this checkout's
`kubemill operator`, that runs a script and a flow synced from examples/windmill.

The test control plane has no Service routing (pods are host processes on 127.0.0.1), so the install test
turns the approvals webhook off: the API server could not reach it through its Service.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, controlplane, wait_for
from tests.unit.test_chart import (
    AWAITED,
    CHART,
    CI_FILES,
    alert_expressions,
    dashboard,
    dashboard_expressions,
    exported_names,
    metric_names,
)

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
# Kinds whose CRDs come from other projects (Prometheus Operator, cert-manager): rendered and checked here,
# not sent to an API server that does not know them.
FOREIGN = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}


@pytest.fixture(scope="session")
def helm() -> str:
    """helm from scripts/install-tools (idempotent: a no-op when the pinned version is built)."""
    out = subprocess.run(
        [str(REPO / "scripts/install-tools")], check=True, capture_output=True, text=True, timeout=900
    ).stdout
    path = next(line.split()[1] for line in out.splitlines() if line.startswith("helm"))
    assert os.access(path, os.X_OK), out
    return path


def render(helm: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm, "template", "kubemill", str(CHART), "--namespace", namespace, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


@pytest.mark.parametrize("values", CI_FILES)
def test_helm_lint_is_clean(helm: str, values: str) -> None:
    proc = subprocess.run(
        [helm, "lint", str(CHART), "--strict", "-f", str(CHART / "ci" / values)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CI_FILES)
def test_each_rendering_passes_a_server_side_dry_run(
    helm: str, cluster: Cluster, namespace: str, values: str
) -> None:
    docs = render(helm, namespace, "-f", str(CHART / "ci" / values))
    extra = {"kubemill-extra", "kubemill-secrets"}  # ci/extra-objects-values.yaml's own objects
    for doc in docs:
        if doc["metadata"]["name"] not in extra:
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubemill", doc["metadata"]
    native = [d for d in docs if d["kind"] not in FOREIGN]
    for other in {d["metadata"].get("namespace") for d in native} - {None, namespace}:  # e.g. `monitoring`
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    out = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
        input="\n---\n".join(json.dumps(d) for d in native),
    ).stdout  # fmt: skip
    assert out.count("(server dry run)") == len(native), out


def test_the_default_rendering(helm: str) -> None:
    docs = render(helm, "kubemill-system")
    assert kinds(docs).count("CustomResourceDefinition") == len(list((REPO / "crds").glob("*.yaml")))
    crd = next(d for d in docs if d["kind"] == "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/kubemill/operator:0.1.0"
    assert container["args"][0] == "operator"
    assert "--runner-image=ghcr.io/kubemill/runner-{language}:{version}" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"]["memory"] == "512Mi"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBEMILL_WEBHOOK_CERT_DIR"] == "/etc/kubemill/webhook"
    assert env["KUBEMILL_WEBHOOK_HOST"] == "kubemill-webhook.kubemill-system.svc"
    configs = [d for d in docs if d["kind"].endswith("WebhookConfiguration")]
    assert {c["metadata"]["name"] for c in configs} == {"kubemill-approvals"}
    secret = next(d for d in docs if d["kind"] == "Secret")
    for config in configs:
        for webhook in config["webhooks"]:
            client = webhook["clientConfig"]
            assert client["service"]["name"] == "kubemill-webhook"
            assert client["caBundle"] == secret["data"]["ca.crt"]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    for name, source in (
        ("kubemill-operator", "operator-role.yaml"),
        ("kubemill-trigger", "trigger-role.yaml"),
    ):
        assert roles[name]["rules"] == yaml.safe_load((REPO / "config/rbac" / source).read_text())["rules"]
    assert "ServiceMonitor" not in kinds(docs) and "ConfigMap" not in kinds(docs)


def test_the_optional_renderings(helm: str) -> None:
    minimal = render(helm, "x", "-f", str(CHART / "ci/minimal-values.yaml"))
    assert kinds(minimal) == ["Deployment"]
    assert minimal[0]["spec"]["template"]["spec"]["serviceAccountName"] == "kubemill-operator"
    env = {e["name"]: e.get("value") for e in minimal[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEMILL_WEBHOOK"] == "off"

    monitoring = render(helm, "x", "-f", str(CHART / "ci/monitoring-values.yaml"))
    (rule,) = [d for d in monitoring if d["kind"] == "PrometheusRule"]
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) >= {"KubemillOperatorDown", "KubemillRunsFailing", "KubemillRunsSuspendedTooLong"}
    assert "> 43200" in alerts["KubemillRunsSuspendedTooLong"]["expr"]  # suspendedFor: 12h
    (board,) = [d for d in monitoring if d["kind"] == "ConfigMap"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["namespace"] == "monitoring"
    assert json.loads(board["data"]["kubemill.json"]) == dashboard()

    manager = render(helm, "x", "-f", str(CHART / "ci/cert-manager-values.yaml"))
    assert {"Certificate", "Issuer"} <= set(kinds(manager)) and "Secret" not in kinds(manager)
    config = next(d for d in manager if d["kind"] == "MutatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "x/kubemill-webhook-tls"
    assert "caBundle" not in config["webhooks"][0]["clientConfig"]

    extra = render(helm, "x", "-f", str(CHART / "ci/extra-objects-values.yaml"))
    names = {(d["kind"], d["metadata"]["name"]): d for d in extra}
    assert names[("Secret", "kubemill-secrets")]["metadata"]["namespace"] == "x"
    crd = next(d for d in extra if d["kind"] == "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in crd["metadata"]["annotations"]
    assert crd["metadata"]["labels"]["team"] == "platform"


# --- a real install -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[Cluster]:
    """A control plane of its own: no other test's operator may reconcile what the chart's operator runs."""
    bin_dir = Path(os.environ["KUBEMILL_CLUSTER_BIN"]) if "KUBEMILL_CLUSTER_BIN" in os.environ else None
    with controlplane.running(bin_dir) as plane:
        yield Cluster(plane)


def _pod_ready(cluster: Cluster, namespace: str) -> bool:
    pods = cluster.get("pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")["items"]
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for p in pods
        for c in p.get("status", {}).get("conditions", [])
    )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _operator_log(cluster: Cluster) -> str:
    logs = cluster.kubectl(
        "logs",
        "-n",
        "kubemill-system",
        "-l",
        "app.kubernetes.io/component=operator",
        "--tail=80",
        check=False,
    )
    return logs.stdout + logs.stderr


def _finished_last_run(cluster: Cluster, name: str, namespace: str) -> dict[str, Any] | None:
    last: dict[str, Any] | None = (
        cluster.get("schedule", name, "-n", namespace).get("status", {}).get("lastRun")
    )
    return last if last and last.get("phase") in ("Succeeded", "Failed") else None


def _phase(cluster: Cluster, kind: str, name: str, namespace: str) -> str | None:
    phase: str | None = cluster.get(kind, name, "-n", namespace).get("status", {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


def test_the_chart_installs_and_runs_a_script_and_a_flow(
    helm: str, private_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    metrics_port, health_port = controlplane.free_port(), controlplane.free_port()
    docs = render(
        helm, "kubemill-system",
        "--set-json", f'operator.command=["{REPO / ".venv/bin/kubemill"}"]',
        "--set", f"operator.metricsPort={metrics_port},operator.healthPort={health_port}",
        "--set", "webhook.enabled=false,operator.verbose=true",
    )  # fmt: skip
    cluster.kubectl("create", "namespace", "kubemill-system")
    manifests = "\n---\n".join(json.dumps(d) for d in docs)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=manifests)
    wait_for(lambda: _pod_ready(cluster, "kubemill-system"), 120, "the operator pod to be Ready")
    healthz = f"http://127.0.0.1:{health_port}/healthz"  # pods are host processes on the test node
    try:
        wait_for(lambda: _http_ok(healthz), 60, "the operator's /healthz")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{_operator_log(cluster)}") from None

    workspace = tmp_path / "deploy"
    subprocess.run(
        [str(REPO / ".venv/bin/kubemill"), "sync", str(REPO / "examples/windmill"), "-o", str(workspace),
         "--namespace", "demo"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    cluster.kubectl("create", "namespace", "demo")
    cluster.kubectl("apply", "--server-side", "-k", str(workspace))
    runs = [
        {
            "kind": "ScriptRun",
            "name": "hello",
            "spec": {"scriptPath": "f/demo/hello", "args": {"name": "helm"}},
        },
        {
            "kind": "FlowRun",
            "name": "greet",
            "spec": {"flowPath": "f/demo/greet_and_count", "args": {"names": "Ada, Grace"}},
        },
    ]
    for run in runs:
        cluster.apply(
            {
                "apiVersion": "kubemill.dev/v1alpha1",
                "kind": run["kind"],
                "metadata": {"name": run["name"], "namespace": "demo"},
                "spec": run["spec"],
            }
        )
    for run in runs:
        try:
            phase = wait_for(
                lambda r=run: _phase(cluster, r["kind"], r["name"], "demo"),  # type: ignore[misc]
                240,
                f"{run['kind']} {run['name']} to finish",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{_operator_log(cluster)}") from None
        status = cluster.get(run["kind"], run["name"], "-n", "demo")["status"]
        assert phase == "Succeeded", status
    assert cluster.get("scriptrun", "hello", "-n", "demo")["status"]["result"]["greeting"] == "Hello, helm."
    assert cluster.get("flowrun", "greet", "-n", "demo")["status"]["result"] == {"count": 2}

    # A schedule: its CronJob's trigger pod creates the run under the chart's kubemill-trigger ClusterRole.
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "hello-every-minute", "namespace": "demo"},
            "spec": {"schedule": "* * * * *", "scriptPath": "f/demo/hello", "args": {"name": "cron"}},
        }
    )
    last = wait_for(
        lambda: _finished_last_run(cluster, "hello-every-minute", "demo"), 150, "the schedule's first run"
    )
    assert last["phase"] == "Succeeded", last

    # The dashboard's and alerts' metric names, against what the running operator serves.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        served = exported_names(response.read().decode())
    assert "kubemill_runs_finished_total" in served
    used = metric_names(dashboard_expressions(dashboard()) + alert_expressions())
    assert used - served - AWAITED == set()
