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
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, controlplane, wait_for
from tests.unit.test_chart import (
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


def render(helm: str, namespace: str, *args: str, release: str = "kubemill") -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm, "template", release, str(CHART), "--namespace", namespace, *args],
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
    # A release name of its own: the session's operator has written its own `kubemill-approvals` webhook
    # configurations, which a server-side apply of the chart's (service, not url) must not be merged into.
    docs = render(helm, namespace, "-f", str(CHART / "ci" / values), release="kubemill-dryrun")
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
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"kubemill-operator", "kubemill-ui"}
    spec = deployments["kubemill-operator"]["spec"]
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
    assert env["KUBEMILL_TRIGGER_IMAGE"] == "ghcr.io/kubemill/operator:0.1.0"
    assert (env["KUBEMILL_RESUME_ADDR"], env["KUBEMILL_RESUME_PORT"]) == ("0.0.0.0", "8082")
    assert env["KUBEMILL_RESUME_URL"] == "http://kubemill-resume.kubemill-system.svc"
    assert {"name": "resume", "containerPort": 8082, "protocol": "TCP"} in container["ports"]
    assert not [a for a in container["args"] if a.startswith("--runner-env")]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert services["kubemill-resume"]["spec"]["ports"][0]["targetPort"] == "resume"
    assert services["kubemill-resume"]["spec"]["selector"]["app.kubernetes.io/component"] == "operator"
    assert services["kubemill-ui"]["spec"]["selector"]["app.kubernetes.io/component"] == "ui"
    assert "Ingress" not in kinds(docs)
    _check_the_ui(docs, deployments["kubemill-ui"])
    policies = [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    sources = [
        doc
        for name in ("resource-secrets-policy.yaml", "pool-jobs-policy.yaml", "run-fields-policy.yaml")
        for doc in yaml.safe_load_all((REPO / "config/admission" / name).read_text())
    ]

    def specs(objects: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return sorted(
            (o["kind"], o["metadata"]["name"], json.dumps(o["spec"], sort_keys=True)) for o in objects
        )

    assert specs(policies) == specs(sources)  # every policy, as generated (the pool workers', the runs')
    crd_last = max(i for i, d in enumerate(docs) if d["kind"] == "CustomResourceDefinition")
    assert min(i for i, d in enumerate(docs) if d in policies) > crd_last  # Helm installs in this order
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
    assert "kubemill-webhooks" not in roles  # HttpTriggers are off: the UI is bound to nothing
    assert "ServiceMonitor" not in kinds(docs) and "ConfigMap" not in kinds(docs)


def _check_the_ui(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
    """`kubemill ui` as the chart deploys it by default: restricted, probed, and holding no privileges."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/kubemill/operator:0.1.0"
    assert container["args"][:3] == ["ui", "--host=0.0.0.0", "--port=8080"]
    assert "--triggers" not in container["args"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == "kubemill-ui"
    bound = [
        d
        for d in docs
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s.get("name") == "kubemill-ui" for s in d["subjects"])
    ]
    assert bound == []


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

    ui = render(helm, "x", "-f", str(CHART / "ci/ui-values.yaml"))
    bindings = [d for d in ui if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["name"] == "kubemill-webhooks"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubemill-ui", "namespace": "x"}]
    (webhooks_role,) = [
        d for d in ui if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "kubemill-webhooks"
    ]
    assert (
        webhooks_role["rules"]
        == yaml.safe_load((REPO / "config/rbac/webhooks-role.yaml").read_text())["rules"]
    )
    ui_deployment = next(
        d for d in ui if d["metadata"]["name"] == "kubemill-ui" and d["kind"] == "Deployment"
    )
    assert ui_deployment["spec"]["replicas"] == 2
    assert "--triggers" in ui_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    ingresses = {d["metadata"]["name"]: d["spec"] for d in ui if d["kind"] == "Ingress"}
    assert ingresses["kubemill-ui"]["rules"][0]["http"]["paths"][0]["path"] == "/"
    assert ingresses["kubemill-resume"]["rules"][0]["http"]["paths"][0]["path"] == "/approvals"
    assert ingresses["kubemill-resume"]["tls"] == [
        {"hosts": ["kubemill.example.com"], "secretName": "kubemill-tls"}
    ]
    operator = next(
        d for d in ui if d["metadata"]["name"] == "kubemill-operator" and d["kind"] == "Deployment"
    )
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBEMILL_RESUME_URL"] == "https://kubemill.example.com"
    assert [a for a in container["args"] if a.startswith("--runner-env")] == [
        "--runner-env=HTTPS_PROXY=http://proxy.example.com:3128",
        "--runner-env=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    ]

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


def _pod_ready(cluster: Cluster, namespace: str, component: str = "operator") -> bool:
    pods = cluster.get("pods", "-n", namespace, "-l", f"app.kubernetes.io/component={component}")["items"]
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


def _http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Status and body of a GET (or a POST with `body`); HTTP errors are answers too."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


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


def test_the_chart_installs_and_runs_a_script_and_a_flow(  # noqa: PLR0915 - complexity debt
    helm: str, private_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    metrics_port, health_port = controlplane.free_port(), controlplane.free_port()
    ui_port, resume_port = controlplane.free_port(), controlplane.free_port()
    kubemill = REPO / ".venv/bin/kubemill"
    docs = render(
        helm, "kubemill-system",
        "--set-json", f'operator.command=["{kubemill}"]',
        "--set-json", f'ui.command=["{kubemill}"]',
        "--set", f"operator.metricsPort={metrics_port},operator.healthPort={health_port}",
        "--set", f"ui.port={ui_port},resumeUrls.port={resume_port}",
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
    runs: list[dict[str, Any]] = [
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

    # The operator serves resume URLs on the chart's port (an unknown run: 404 from its handler).
    status, body = _http(f"http://127.0.0.1:{resume_port}/approvals/demo/nope/step?sig=x")
    assert (status, body) == (404, "no flow run nope in demo")

    # The chart's UI: its page, and a Windmill-style jobs/run call that creates a run with alice's token.
    wait_for(lambda: _pod_ready(cluster, "kubemill-system", "ui"), 120, "the UI pod to be Ready")
    ui = f"http://127.0.0.1:{ui_port}"
    status, page = _http(f"{ui}/")
    index = REPO / "operator/kubemill/ui/static/index.html"
    assert (status, page) == (200, index.read_text()), "build the UI bundle: cd ui && npm ci && npm run build"
    for role in ("kubemill-view", "kubemill-edit"):  # the chart's roles (aggregated into view and edit)
        cluster.kubectl(
            "create", "rolebinding", f"alice-{role}", f"--clusterrole={role}", "--user=alice@example.com",
            "-n", "demo",
        )  # fmt: skip
    call = f"{ui}/api/w/demo/jobs/run/p/f/demo/hello"
    status, _ = _http(call, b'{"name": "ui"}', {"Content-Type": "application/json"})
    assert status == 401  # no token: the UI has no identity of its own to fall back on
    alice = {"Authorization": f"Bearer {cluster.plane.tokens['alice']}", "Content-Type": "application/json"}
    status, name = _http(call, b'{"name": "ui"}', alice)
    assert status == 201, name
    phase = wait_for(lambda: _phase(cluster, "ScriptRun", name, "demo"), 240, "the UI's run to finish")
    run = cluster.get("scriptrun", name, "-n", "demo")
    assert phase == "Succeeded", run["status"]
    assert run["status"]["result"]["greeting"] == "Hello, ui."
    mallory = dict(alice, Authorization=f"Bearer {cluster.plane.tokens['mallory']}")
    status, refusal = _http(call, b'{"name": "ui"}', mallory)
    assert status == 403 and "mallory@example.com" in refusal, refusal  # RBAC decides, per caller

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
    assert used - served == set()
