"""The generated CRDs on the real API server: they install, every example is accepted, `kubectl get kubemill`
shows useful columns, malformed manifests are refused with the intended message (and nothing is stored), and
the built-in view/edit roles cover kubemill kinds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubemill.models.kinds import KINDS, parse_manifest

from tests.conftest import Cluster, wait_for

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "manifests"


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    """crds/ and the aggregated roles installed, every CRD Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "config/rbac"))
    names = [f"crd/{kind.crd_name}" for kind in KINDS]
    cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", *names)
    return cluster


def test_every_crd_is_established_with_its_names_accepted(crds: Cluster) -> None:
    for kind in KINDS:
        conditions = {c["type"]: c["status"] for c in crds.get("crd", kind.crd_name)["status"]["conditions"]}
        assert conditions.get("Established") == "True", kind.name
        assert conditions.get("NamesAccepted") == "True", kind.name


def example_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for path in EXAMPLES.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("kubemill.dev/"):
                names.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    return names


def test_every_example_passes_a_server_side_dry_run(crds: Cluster, namespace: str) -> None:
    out = crds.kubectl(
        "apply", "--server-side", "--dry-run=server", "-n", namespace, "-R", "-f", str(EXAMPLES)
    )
    accepted = [line for line in out.stdout.splitlines() if "(server dry run)" in line]
    assert len(accepted) == sum(len(n) for n in example_names().values()) + 1  # + the example Secret
    assert crds.get("kubemill", "-n", namespace)["items"] == []


def test_kubectl_get_kubemill_lists_examples_with_useful_columns(crds: Cluster, namespace: str) -> None:
    crds.kubectl("apply", "--server-side", "-n", namespace, "-R", "-f", str(EXAMPLES))
    table = crds.kubectl("get", "kubemill", "-n", namespace).stdout
    headers = [line.split() for line in table.splitlines() if line.startswith("NAME")]
    assert ["NAME", "PATH", "LANGUAGE", "READY", "AGE"] in headers  # scripts
    assert ["NAME", "PATH", "SUMMARY", "READY", "AGE"] in headers  # flows
    assert ["NAME", "SCRIPT", "PHASE", "ATTEMPTS", "STARTED", "AGE"] in headers  # script runs
    assert ["NAME", "FLOW", "PHASE", "STEP", "STARTED", "AGE"] in headers  # flow runs
    assert any(h[:4] == ["NAME", "SCHEDULE", "SCRIPT", "FLOW"] and "ENABLED" in h for h in headers)
    for kind, names in example_names().items():
        for name in names:
            assert f"{kind.lower()}.kubemill.dev/{name} " in table
    assert "f/order_processing/order_processing   Order Processing Pipeline" in table
    assert "f/devops/deploy_service" in table and "bash" in table
    schedules = crds.kubectl(
        "get", "sched", "-n", namespace
    ).stdout  # short name; enabled defaulted server-side
    row = next(line for line in schedules.splitlines() if line.startswith("database-health-check "))
    assert "*/15 * * * *" in row and " true " in row
    selected = crds.get("scr", "-n", namespace, "--field-selector", "spec.path=f/devops/deploy_service")[
        "items"
    ]
    assert [s["metadata"]["name"] for s in selected] == ["deploy-service"]
    # Exactly the examples' definitions were stored. Runs are left out of the count: with the operator running
    # in the same session they start children, finish, and old ones are pruned by the history limit.
    definitions = "scripts,flows,schedules,resourcetypes,resources,variables,httptriggers,runnerpools"
    applied = crds.get(definitions, "-n", namespace)["items"]
    runs = {"ScriptRun", "FlowRun"}
    assert len(applied) == sum(len(n) for kind, n in example_names().items() if kind not in runs)


def manifest(kind: str, name: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "kubemill.dev/v1alpha1", "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        doc["spec"] = spec
    return doc


def script(name: str, **spec: Any) -> dict[str, Any]:
    return manifest("Script", name, {"path": "f/tests/s", "language": "python3", **spec})


def flow(name: str, *modules: dict[str, Any]) -> dict[str, Any]:
    return manifest("Flow", name, {"path": "f/tests/f", "value": {"modules": list(modules)}})


CONFIG_MAP = {"configMapKeyRef": {"name": "code", "key": "main.py"}}

# (case, manifest, what the API server says)
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    (
        "wrong type",
        script("wrong-type", content="x", timeoutSeconds="ten"),
        "spec.timeoutSeconds in body must be of type integer",
    ),
    (
        "content and contentFrom",
        script("both", content="x", contentFrom=CONFIG_MAP),
        "set exactly one of spec.content (the code inline) or spec.contentFrom (a ConfigMap key)",
    ),
    ("neither content nor contentFrom", script("neither"), "set exactly one of spec.content"),
    ("absolute path", script("abs-path", path="/home/me/x.py", content="x"), "spec.path: Invalid value"),
    (
        "path without a folder",
        script("short-path", path="f/x", content="x"),
        "must be a Windmill path like f/<folder>/<name>",
    ),
    (
        "unknown language",
        script("ruby", language="ruby", content="x"),
        'spec.language: Unsupported value: "ruby"',
    ),
    (
        "missing language",
        manifest("Script", "no-language", {"path": "f/a/b", "content": "x"}),
        "spec.language: Required value",
    ),
    ("missing spec", manifest("Flow", "no-spec", None), "spec: Required value"),
    ("unknown field", script("typo", content="x", contnet="y"), "contnet"),
    (
        "unknown module type",
        flow("bad-step", {"id": "charge", "value": {"type": "http"}}),
        "step 'charge': unknown module type 'http' (expected one of: rawscript, script, flow",
    ),
    (
        "script step without path",
        flow("no-step-path", {"id": "a", "value": {"type": "script", "input_transforms": {}}}),
        "type script needs path",
    ),
    (
        "approval without approvers",
        flow("no-approvers", {"id": "ok", "value": {"type": "approval", "approvers": []}}),
        "spec.value.modules[0].value.approvers: Invalid value",
    ),
    (
        "schedule with two targets",
        manifest("Schedule", "two", {"schedule": "0 * * * *", "scriptPath": "f/a/b", "flowPath": "f/a/c"}),
        "set exactly one of spec.scriptPath or spec.flowPath",
    ),
    (
        "retry on a flow's schedule",
        manifest(
            "Schedule",
            "flow-retry",
            {
                "schedule": "0 * * * *",
                "flowPath": "f/a/c",
                "retry": {"constant": {"attempts": 2, "seconds": 5}},
            },
        ),
        "spec.retry applies to Schedules of scripts (spec.scriptPath)",
    ),
    (
        "cron with 3 fields",
        manifest("Schedule", "cron3", {"schedule": "* * *", "scriptPath": "f/a/b"}),
        "must be a cron expression with 5 fields (minute hour day month weekday), or 6 with seconds first",
    ),
    (
        "variable without value",
        manifest("Variable", "empty", {"path": "u/admin/v"}),
        "set exactly one of spec.value or spec.valueFrom",
    ),
    (
        "run without a target",
        manifest("ScriptRun", "aimless", {"args": {}}),
        "set exactly one of spec.scriptPath (a Script's path) or spec.script (inline code)",
    ),
    (
        "run with a bad path",
        manifest("FlowRun", "bad-run", {"flowPath": "order_processing"}),
        "spec.flowPath: Invalid value",
    ),
]


@pytest.mark.parametrize(("case", "bad", "message"), MALFORMED, ids=[c for c, _, _ in MALFORMED])
def test_malformed_manifests_are_refused_with_the_intended_message_and_not_stored(
    crds: Cluster, namespace: str, case: str, bad: dict[str, Any], message: str
) -> None:
    out = crds.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0, f"{case}: accepted:\n{out.stdout}"
    assert message in out.stderr, f"{case}: expected {message!r} in:\n{out.stderr}"
    gone = crds.kubectl("get", bad["kind"].lower(), bad["metadata"]["name"], "-n", namespace, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    with pytest.raises(ValueError):  # the operator's models refuse what the API server refuses  # noqa: PT011
        parse_manifest(bad)


def can(cluster: Cluster, user: str, verb: str, resource: str, namespace: str, *extra: str) -> bool:
    out = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, *extra, user=user, check=False)
    return out.stdout.strip() == "yes"


def test_builtin_view_and_edit_roles_cover_kubemill_kinds(crds: Cluster, namespace: str) -> None:
    crds.kubectl(
        "create", "rolebinding", "bob-edits", "--clusterrole=edit", "--user=bob@example.com", "-n", namespace
    )
    crds.kubectl(
        "create",
        "rolebinding",
        "mallory-views",
        "--clusterrole=view",
        "--user=mallory@example.com",
        "-n",
        namespace,
    )
    wait_for(lambda: can(crds, "bob", "create", "flowruns", namespace), 60, "edit to aggregate kubemill-edit")
    wait_for(
        lambda: can(crds, "mallory", "list", "scripts", namespace), 60, "view to aggregate kubemill-view"
    )
    for plural in [k.plural for k in KINDS]:
        assert can(crds, "bob", "create", plural, namespace), plural
        assert can(crds, "bob", "delete", plural, namespace), plural
        assert can(crds, "mallory", "watch", plural, namespace), plural
        assert not can(crds, "mallory", "create", plural, namespace), plural
        assert not can(crds, "bob", "update", plural, namespace, "--subresource=status"), plural
    assert can(crds, "bob", "patch", "flowruns", namespace)  # approvals are annotation patches
    assert not can(crds, "mallory", "patch", "flowruns", namespace)
    assert not can(crds, "alice", "list", "scripts", namespace)  # no binding, no access
