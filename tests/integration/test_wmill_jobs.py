"""Scripts that start runs (`wmill.run_script`, `run_script_async`, `run_flow_async`, `wait_job`,
`get_result`, `get_job_status`) on the real control plane, under the Script's opt-in identity: a
ServiceAccount that a Role lets create and get runs in its namespace, nothing more."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.integration.test_day2_cli import two_step_flow
from tests.integration.test_operator import finished, script, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

FAN_OUT = """import wmill

def main(n: int = 3):
    ids = [wmill.run_script_async("f/jobs/square", args={"x": i}) for i in range(n)]
    statuses = {wmill.get_job_status(i) for i in ids}
    squares = [wmill.wait_job(i) for i in ids]
    direct = wmill.run_script("f/jobs/square", args={"x": 10})
    flow = wmill.run_flow_async("f/day2/two_steps", args={"n": 1})
    wmill.wait_job(flow)
    try:
        wmill.run_script("f/jobs/square", args={"x": -1})
        failed = None
    except Exception as exc:
        failed = f"{type(exc).__name__}: {exc}"
    return {"squares": squares, "direct": direct, "flow": wmill.get_result(flow), "failed": failed,
            "statuses": sorted(statuses - {"WAITING", "RUNNING", "COMPLETED"})}
"""
SQUARE = "def main(x: int):\n    if x < 0:\n        raise ValueError('negative')\n    return x * x\n"


def identity(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "serviceaccount", "fan-out", "-n", ns)
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "start-runs", "namespace": ns},
        "rules": [
            {
                "apiGroups": ["kubemill.dev"],
                "resources": ["scriptruns", "flowruns"],
                "verbs": ["create", "get"],
            }
        ],
    }
    cluster.apply(role)
    cluster.kubectl(
        "create", "rolebinding", "start-runs", "--role=start-runs", f"--serviceaccount={ns}:fan-out", "-n", ns
    )


def fan_out(op: Operator, cluster: Cluster, ns: str, run: str, language: str, code: str) -> str:
    """Run a fan-out script (its identity may start runs); check its result; the run's uid."""
    identity(cluster, ns)
    cluster.apply(script("square", "f/jobs/square", "python3", SQUARE), "-n", ns)
    cluster.apply(two_step_flow(ns))
    cluster.apply(
        script(run, f"f/jobs/{run}", language, code, runner={"serviceAccountName": "fan-out"}), "-n", ns
    )
    cluster.apply(script_run(f"{run}-1", f"f/jobs/{run}"), "-n", ns)
    status = finished(op, ns, f"{run}-1", timeout=240)["status"]
    assert status["phase"] == "Succeeded", status
    result = status["result"]
    assert result["squares"] == [0, 1, 4] and result["direct"] == 100 and result["flow"] == 4
    assert result["statuses"] == []
    assert (
        result["failed"].startswith("JobFailed: scriptrun square-")
        and "ValueError: negative" in result["failed"]
    )
    return str(cluster.get("scriptrun", f"{run}-1", "-n", ns)["metadata"]["uid"])


def test_a_script_fans_out_waits_and_gets_results_as_its_identity(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    parent_uid = fan_out(running_operator, cluster, ns, "fan", "python3", FAN_OUT)
    children = [
        r
        for kind in ("scriptruns", "flowruns")
        for r in cluster.get(kind, "-n", ns, "-l", f"kubemill.dev/parent-run-uid={parent_uid}")["items"]
    ]
    assert len(children) == 6  # 3 async, 1 direct, 1 flow, 1 failing
    assert all(c["metadata"]["ownerReferences"][0]["uid"] == parent_uid for c in children)
    # Deleting the parent deletes what it started (the garbage collector follows the owner references).
    cluster.kubectl("delete", "scriptrun", "fan-1", "-n", ns)
    wait_for(
        lambda: (
            not cluster.get("scriptruns", "-n", ns, "-l", f"kubemill.dev/parent-run-uid={parent_uid}")[
                "items"
            ]
        ),
        60,
        "the children to be deleted with their parent",
    )


def test_without_an_identity_or_the_right_starting_a_run_says_how_to_get_one(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    cluster.kubectl("create", "serviceaccount", "no-rights", "-n", ns)
    code = "import wmill\n\ndef main():\n    return wmill.run_script('f/jobs/square', args={'x': 2})\n"
    cluster.apply(script("square", "f/jobs/square", "python3", SQUARE), "-n", ns)
    cluster.apply(script("bare", "f/jobs/bare", "python3", code), "-n", ns)
    cluster.apply(
        script("denied", "f/jobs/denied", "python3", code, runner={"serviceAccountName": "no-rights"}),
        "-n",
        ns,
    )
    cluster.apply(script_run("bare-1", "f/jobs/bare"), "-n", ns)
    cluster.apply(script_run("denied-1", "f/jobs/denied"), "-n", ns)
    bare = finished(running_operator, ns, "bare-1")["status"]
    denied = finished(running_operator, ns, "denied-1")["status"]
    assert bare["phase"] == "Failed" and "set spec.runner.serviceAccountName" in bare["error"]["message"]
    assert denied["phase"] == "Failed", denied
    message = denied["error"]["message"]
    assert f"system:serviceaccount:{ns}:no-rights may not create scriptruns.kubemill.dev" in message, message
    assert cluster.get("scriptruns", "-n", ns, "-l", "kubemill.dev/parent-run-uid")["items"] == []


def test_cancelling_the_parent_cancels_the_runs_it_started(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    identity(cluster, ns)
    sleeper = "import time\n\ndef main():\n    time.sleep(120)\n"
    parent = "import wmill\n\ndef main():\n"
    parent += "    return wmill.wait_job(wmill.run_script_async('f/jobs/sleeper', args={}))\n"
    cluster.apply(script("sleeper", "f/jobs/sleeper", "python3", sleeper), "-n", ns)
    cluster.apply(
        script("parent", "f/jobs/parent", "python3", parent, runner={"serviceAccountName": "fan-out"}),
        "-n",
        ns,
    )
    cluster.apply(script_run("parent-1", "f/jobs/parent"), "-n", ns)
    uid = wait_for(lambda: cluster.get("scriptrun", "parent-1", "-n", ns)["metadata"].get("uid"), 30, "uid")
    selector = f"kubemill.dev/parent-run-uid={uid}"

    def child_running() -> str | None:
        items = cluster.get("scriptruns", "-n", ns, "-l", selector)["items"]
        running = [c for c in items if c.get("status", {}).get("phase") == "Running"]
        return running[0]["metadata"]["name"] if running else None

    child = wait_for(child_running, 90, "the child run running")
    cluster.kubectl("annotate", "scriptrun", "parent-1", "kubemill.dev/cancel=true", "-n", ns)
    assert finished(running_operator, ns, "parent-1")["status"]["phase"] == "Cancelled"
    assert finished(running_operator, ns, child)["status"]["phase"] == "Cancelled"


FAN_OUT_TS = """import * as wmill from "windmill-client";

export async function main(n: number = 3) {
  const ids = [];
  for (let i = 0; i < n; i++) ids.push(await wmill.runScriptAsync("f/jobs/square", { x: i }));
  const statuses = await Promise.all(ids.map((id) => wmill.getJobStatus(id)));
  const squares = [];
  for (const id of ids) squares.push(await wmill.waitJob(id));
  const direct = await wmill.runScript("f/jobs/square", { x: 10 });
  const flow = await wmill.runFlowAsync("f/day2/two_steps", { n: 1 });
  await wmill.waitJob(flow);
  let failed = null;
  try {
    await wmill.runScript("f/jobs/square", { x: -1 });
  } catch (e) {
    failed = `${(e as Error).name}: ${(e as Error).message}`;
  }
  const odd = statuses.filter((s) => !["WAITING", "RUNNING", "COMPLETED"].includes(s));
  return { squares, direct, flow: await wmill.getResult(flow), failed, statuses: odd };
}
"""


@pytest.mark.parametrize("language", ["deno", "bun"])
def test_a_typescript_script_fans_out_waits_and_gets_results(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str, language: str
) -> None:
    ns = restricted_namespace
    uid = fan_out(running_operator, cluster, ns, "fan-ts", language, FAN_OUT_TS)
    children = cluster.get("scriptruns", "-n", ns, "-l", f"kubemill.dev/parent-run-uid={uid}")["items"]
    assert len(children) == 5 and all(c["metadata"]["ownerReferences"][0]["uid"] == uid for c in children)


CANCEL_PY = """import time
import wmill

def main(cancel: bool = False):
    if cancel:
        return wmill.cancel_running()
    time.sleep(120)
"""
CANCEL_TS = """import * as wmill from "windmill-client";

export async function main(cancel: boolean = false) {
  if (cancel) return await wmill.cancelRunning();
  await new Promise((r) => setTimeout(r, 120000));
}
"""


@pytest.mark.parametrize(("language", "code"), [("python3", CANCEL_PY), ("deno", CANCEL_TS)])
def test_cancel_running_cancels_the_other_runs_of_the_same_script(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str, language: str, code: str
) -> None:
    ns = restricted_namespace
    cluster.kubectl("create", "serviceaccount", "canceller", "-n", ns)
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "cancel-runs", "namespace": ns},
        "rules": [{"apiGroups": ["kubemill.dev"], "resources": ["scriptruns"], "verbs": ["list", "patch"]}],
    }
    cluster.apply(role)
    cluster.kubectl(
        "create",
        "rolebinding",
        "cancel-runs",
        "--role=cancel-runs",
        f"--serviceaccount={ns}:canceller",
        "-n",
        ns,
    )
    cluster.apply(
        script("long", "f/jobs/long", language, code, runner={"serviceAccountName": "canceller"}), "-n", ns
    )
    cluster.apply(
        script("other", "f/jobs/other", "python3", "import time\n\ndef main():\n    time.sleep(60)\n"),
        "-n",
        ns,
    )
    for name in ("long-1", "long-2"):
        cluster.apply(script_run(name, "f/jobs/long"), "-n", ns)
    cluster.apply(script_run("other-1", "f/jobs/other"), "-n", ns)

    def both_running() -> bool:
        phases = [
            cluster.get("scriptrun", n, "-n", ns).get("status", {}).get("phase") for n in ("long-1", "long-2")
        ]
        return phases == ["Running", "Running"]

    wait_for(both_running, 90, "long-1 and long-2 running")
    cluster.apply(script_run("canceller-1", "f/jobs/long", {"cancel": True}), "-n", ns)
    status = finished(running_operator, ns, "canceller-1", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert sorted(status["result"]["canceled"]) == ["long-1", "long-2"]
    for name in ("long-1", "long-2"):
        assert finished(running_operator, ns, name)["status"]["phase"] == "Cancelled"
    assert cluster.get("scriptrun", "other-1", "-n", ns)["status"]["phase"] in (
        "Pending",
        "Running",
        "Succeeded",
    )
