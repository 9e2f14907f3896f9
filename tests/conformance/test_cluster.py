"""The conformance cases marked `cluster: true`, as FlowRuns on the real control plane (steps as ScriptRuns
in runner pods), each agreeing with Windmill's expectation and with `kubemill run` on the same case."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.cases import Case, check, load_cases, run_locally
from tests.conftest import Cluster, wait_for
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

API = "kubemill.dev/v1alpha1"
CASES = [case for case in load_cases() if case.cluster]


def test_a_representative_subset_runs_on_the_cluster() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=lambda c: getattr(c, "name", None))
def test_flowrun_conforms_and_agrees_with_kubemill_run(
    case: Case, cluster: Cluster, namespace: str, running_operator: Operator, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        flowrun_conforms(case, cluster, namespace, tmp_path, stack)


def flowrun_conforms(
    case: Case, cluster: Cluster, namespace: str, tmp_path: Path, stack: contextlib.ExitStack
) -> None:
    name = case.name.replace("_", "-")
    path = f"f/conformance/{case.name}"
    if case.flow["value"].get("same_worker"):
        stack.enter_context(shared_volume(cluster, namespace))
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Flow",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"path": path, **case.flow},
        }
    )
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "FlowRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"flowPath": path, "args": case.args}
            | ({"triggerEvent": case.trigger_event} if case.trigger_event is not None else {}),
        }
    )

    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get("flowrun", name, "-n", namespace).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed", "Cancelled") else None

    status = wait_for(finished, 240, f"flowrun {name} finished")
    exit_code = 0 if status["phase"] == "Succeeded" else 1
    result = status.get("result")
    assert check(case, exit_code, result) == [], json.dumps(status, indent=1)[-3000:]
    local = run_locally(case, tmp_path)
    assert (local.exit, without_stacks(local.result)) == (exit_code, without_stacks(result))


@contextlib.contextmanager
def shared_volume(cluster: Cluster, namespace: str) -> Iterator[None]:
    """A PersistentVolume for the run's `./shared` claim, as an administrator (or a provisioner: the test
    control plane has none) provides one: a host directory the node agent mounts, like a `local` volume.
    It is under /tmp on purpose, where the runner mounts its own /tmp over it (as for any checkout cloned
    under /tmp): the node agent must mount it all the same."""
    folder = Path(tempfile.mkdtemp(prefix=f"kubemill-shared-{namespace}-", dir="/tmp"))
    folder.chmod(0o777)
    spec: dict[str, Any] = {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}
    spec["hostPath"] = {"path": str(folder)}
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": namespace}, "spec": spec}
    cluster.apply(volume)
    try:
        yield
    finally:
        cluster.kubectl("delete", "persistentvolume", namespace, "--wait=false")
        shutil.rmtree(folder)


def run_in_phase(cluster: Cluster, namespace: str, name: str, phase: str, timeout: float) -> dict[str, Any]:
    """The FlowRun's status once it is in `phase`."""

    def status() -> dict[str, Any] | None:
        found: dict[str, Any] = cluster.get("flowrun", name, "-n", namespace).get("status") or {}
        return found if found.get("phase") == phase else None

    return wait_for(status, timeout, f"flowrun {name} {phase}")


def without_stacks(value: Any) -> Any:
    """A result with errors' `stack` left out (file paths differ between a pod and this machine)."""
    if isinstance(value, dict):
        return {k: without_stacks(v) for k, v in value.items() if k != "stack"}
    if isinstance(value, list):
        return [without_stacks(v) for v in value]
    return value


REFUSED = [case for case in load_cases() if "refused" in case.expect and case.expect.get("exit") == 2]


def ready_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        conditions = (cluster.get("flow", name, "-n", namespace).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Ready"), None)

    return wait_for(found, 60, f"flow {name} Ready condition")


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_a_flow_kubemill_cannot_honour_is_refused_at_admission_naming_the_field(
    case: Case, cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    name = case.name.replace("_", "-")
    spec = {"path": f"f/conformance/{case.name}", **case.flow}
    meta = {"name": name, "namespace": namespace}
    manifest = {"apiVersion": API, "kind": "Flow", "metadata": meta, "spec": spec}
    refused = cluster.apply(manifest, check=False)
    assert refused.returncode != 0 and case.expect["refused"] in refused.stderr, refused.stderr
    assert "the Flow is not valid" in refused.stderr
    assert cluster.kubectl("get", "flow", name, "-n", namespace, check=False).returncode != 0


def refused_once_known(cluster: Cluster, manifest: dict[str, Any] | str, said: str, script: str) -> None:
    """`manifest` is refused saying `said`, once the admission webhook's index knows Script `script` (a
    dry run says so first: the index learns Scripts from watch events)."""
    wait_for(
        lambda: said in cluster.apply(manifest, "--dry-run=server", check=False).stderr,
        30,
        f"the admission webhook to know script {script}",
    )
    refused = cluster.apply(manifest, check=False)
    assert refused.returncode != 0 and said in refused.stderr, refused.stderr


def test_an_unquoted_yaml_boolean_key_is_refused_naming_step_key_and_parameters(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    """Issue 14's new user: `input_transforms: {n: ...}` in a manifest reaches the API server as `false`."""
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Script",
            "metadata": {"name": "double", "namespace": namespace},
            "spec": {
                "path": "f/conformance/double",
                "language": "python3",
                "content": "def main(n: int):\n    return n * 2\n",
            },
        }
    )
    wait_for(
        lambda: (cluster.get("script", "double", "-n", namespace).get("status") or {}).get("schema") or None,
        60,
        "script double's schema",
    )
    manifest = f"""
apiVersion: {API}
kind: Flow
metadata: {{name: doubling, namespace: {namespace}}}
spec:
  path: f/conformance/doubling
  value:
    modules:
      - id: twice
        value:
          type: script
          path: f/conformance/double
          input_transforms:
            n: {{type: static, value: 2}}
"""
    said = (
        "step twice: input_transforms key 'false' is not a parameter of the script (its parameters: n); "
        "YAML reads an unquoted n as false: quote the key ('n')"
    )
    # The operator's index learns the Script's parameters from its status: wait until a dry run says so.
    refused_once_known(cluster, manifest, said, "double")


def test_a_preprocessor_step_naming_a_bash_script_is_refused_naming_preprocessor_module_and_the_language(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    """Windmill's preprocessors are Python or TypeScript: a `script` step naming a Bash Script is refused at
    admission once the operator's index knows the Script, and reported in the Flow's Ready condition."""
    script = {"path": "f/conformance/shell", "language": "bash", "content": 'echo "{}"\n'}
    cluster.apply(
        {"apiVersion": API, "kind": "Script", "metadata": {"name": "shell"}, "spec": script}, "-n", namespace
    )
    pre = {"id": "preprocessor", "value": {"type": "script", "path": script["path"], "input_transforms": {}}}
    manifest = {
        "apiVersion": API,
        "kind": "Flow",
        "metadata": {"name": "shell-pre", "namespace": namespace},
        "spec": {"path": "f/conformance/shell_pre", "value": {"preprocessor_module": pre, "modules": []}},
    }
    said = "step preprocessor: preprocessor_module: a bash script cannot be a preprocessor"
    refused_once_known(cluster, manifest, said, "shell")


def test_early_return_result_is_in_the_status_and_the_run_goes_on(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    case = next(c for c in load_cases() if c.name == "early_return_result")
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Flow",
            "metadata": {"name": "early", "namespace": namespace},
            "spec": {"path": "f/conformance/early", **case.flow},
        }
    )
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "FlowRun",
            "metadata": {"name": "early", "namespace": namespace},
            "spec": {"flowPath": "f/conformance/early"},
        }
    )
    status = run_in_phase(cluster, namespace, "early", "Succeeded", 240)
    assert (status["earlyResult"], status["earlyResultSent"], status["result"]) == ("early", True, "late")


def test_a_script_changed_under_a_flow_fails_its_next_run_with_the_flows_message(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    """The Script a step names loses the parameter the step's input_transforms key names: the next FlowRun
    fails naming the step, the key and the script's parameters (whether the Flow's Ready condition or the
    run's own check at start sees it first), instead of a bare "'n' is a required property"."""

    def script(code: str) -> dict[str, Any]:
        spec = {"path": "f/conformance/halve", "language": "python3", "content": code}
        return {
            "apiVersion": API,
            "kind": "Script",
            "metadata": {"name": "halve", "namespace": namespace},
            "spec": spec,
        }

    def schema_names() -> list[str]:
        status = cluster.get("script", "halve", "-n", namespace).get("status") or {}
        return list(((status.get("schema") or {}).get("properties")) or {})

    cluster.apply(script("def main(n: int):\n    return n / 2\n"))
    wait_for(lambda: schema_names() == ["n"], 60, "script halve's schema")
    step = {
        "type": "script",
        "path": "f/conformance/halve",
        "input_transforms": {"n": {"type": "static", "value": 4}},
    }
    spec = {"path": "f/conformance/halving", "value": {"modules": [{"id": "half", "value": step}]}}
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "Flow",
            "metadata": {"name": "halving", "namespace": namespace},
            "spec": spec,
        }
    )
    assert ready_condition(cluster, namespace, "halving")["status"] == "True"
    cluster.apply(script("def main(m: int):\n    return m / 2\n"))
    wait_for(lambda: schema_names() == ["m"], 60, "script halve's new schema")
    run = {"flowPath": "f/conformance/halving"}
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "FlowRun",
            "metadata": {"name": "halving", "namespace": namespace},
            "spec": run,
        }
    )
    status = run_in_phase(cluster, namespace, "halving", "Failed", 120)
    said = "step half: input_transforms key 'n' is not a parameter of the script (its parameters: m)"
    assert said in status["error"]["message"], status
