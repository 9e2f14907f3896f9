"""Day-2 operations on the real control plane: logs that outlive pods (masked, bounded), and the `kubemill`
cluster CLI (submit --watch, get, logs, approve/reject through the approval webhook, cancel, retry), run as
the test users through their own kubeconfigs."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from typing import Any

import pytest

from tests.conftest import REPO, Cluster, wait_for
from tests.integration.test_approvals import MANAGERS, approval_flow, grant_users, start_run, wait_phase
from tests.integration.test_operator import finished, script, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
TOKEN = "s3cr3t-Day2-T0ken-9090"
LOG_MAX = 256 * 1024


def kubemill(
    cluster: Cluster, user: str, *args: str, timeout: float = 180, plugin: bool = False
) -> subprocess.CompletedProcess[str]:
    exe = REPO / ".venv" / "bin" / ("kubectl-kubemill" if plugin else "kubemill")
    return subprocess.run(
        [str(exe), *args, f"--kubeconfig={cluster.kubeconfig_for(user)}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cluster.env(),
    )


def leaky_script(cluster: Cluster, ns: str) -> None:
    """A script that prints its secret variable (as is and in base64) after a lot of output."""
    cluster.kubectl("create", "secret", "generic", "api-token", f"--from-literal=token={TOKEN}", "-n", ns)
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Variable",
            "metadata": {"name": "api-token"},
            "spec": {
                "path": "f/day2/token",
                "isSecret": True,
                "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}},
            },
        },
        "-n",
        ns,
    )
    code = (
        "import base64\nimport wmill\n\n"
        "def main(lines: int = 10, fail: bool = False):\n"
        "    token = wmill.get_variable('f/day2/token')\n"
        "    print('early line', flush=True)\n"
        "    for i in range(lines):\n"
        "        print(f'line {i:06d} ' + 'x' * 90)\n"
        "    print('the token is', token)\n"
        "    print('encoded', base64.b64encode(token.encode()).decode())\n"
        "    if fail:\n"
        "        raise RuntimeError('it failed')\n"
        "    return {'lines': lines}\n"
    )
    cluster.apply(script("leaky", "f/day2/leaky", "python3", code, resources=["f/day2/token"]), "-n", ns)


def pods_of(cluster: Cluster, ns: str, run: str) -> list[Any]:
    return [
        p
        for p in cluster.get("pods", "-n", ns)["items"]
        if p["metadata"].get("labels", {}).get("job-name", "").startswith(f"{run}-a")
    ]


def test_submit_watch_and_logs_that_outlive_the_pod_are_masked_and_bounded(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    leaky_script(cluster, ns)
    # 4000 lines of ~100 bytes: more than the 256 KiB kept, so the head is cut and the cut is said.
    done = kubemill(cluster, "admin", "submit", "f/day2/leaky", "--arg", "lines=4000", "--watch", "-n", ns)
    assert done.returncode == 0, done.stderr + running_operator.log()[-3000:]
    assert json.loads(done.stdout) == {"lines": 4000}
    assert "Succeeded" in done.stderr
    runs = cluster.get("scriptruns", "-n", ns)["items"]
    assert len(runs) == 1
    name = runs[0]["metadata"]["name"]
    assert name.startswith("leaky-")
    # The Job is deleted when the run finishes, its pod goes with it: the stored log is what remains.
    wait_for(lambda: not pods_of(cluster, ns, name), 60, f"the pods of {name} to be gone")
    logs = kubemill(cluster, "admin", "logs", name, "-n", ns)
    assert logs.returncode == 0, logs.stderr
    text = logs.stdout
    assert text.startswith("[kubemill: "), text[:300]
    assert "earlier bytes of output were cut" in text.splitlines()[0]
    assert "early line" not in text  # the head was cut ...
    assert "line 003999 " in text and "the token is ***" in text  # ... the tail kept, masked
    assert TOKEN not in text
    assert "KUBEMILL_RESULT" not in text  # the runner's envelope line is not part of the log
    assert len(text.encode()) <= LOG_MAX + 200
    cms = [c for c in cluster.get("configmaps", "-n", ns)["items"] if "-log-" in c["metadata"]["name"]]
    assert len(cms) == 1
    cm = cms[0]
    assert cm["metadata"]["ownerReferences"][0]["name"] == name
    assert "binaryData" in cm and "data" not in cm  # compressed
    assert len(cm["binaryData"]["log.gz"]) < 100 * 1024, "gzip should shrink this repetitive log a lot"
    raw = cluster.kubectl("get", "configmaps,scriptruns,events", "-n", ns, "-o", "json").stdout
    assert TOKEN not in raw
    # The same through `kubectl kubemill` (the plugin binary), and a table of runs.
    table = kubemill(cluster, "admin", "get", "runs", "-n", ns, plugin=True)
    assert table.returncode == 0, table.stderr
    assert name in table.stdout and "Succeeded" in table.stdout and "f/day2/leaky" in table.stdout


def test_stored_logs_mask_the_base64_form_of_a_secret(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    leaky_script(cluster, ns)
    cluster.apply(script_run("leaky-b64", "f/day2/leaky", {"lines": 1}), "-n", ns)
    assert finished(running_operator, ns, "leaky-b64")["status"]["phase"] == "Succeeded"
    text = kubemill(cluster, "admin", "logs", "leaky-b64", "-n", ns).stdout
    assert "the token is ***" in text
    encoded = base64.b64encode(TOKEN.encode()).decode()
    assert encoded not in text and encoded.rstrip("=") not in text, text


def test_a_failing_run_keeps_each_attempt_and_submit_exits_non_zero(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    leaky_script(cluster, ns)
    cluster.apply(
        script_run("leaky-retry", "f/day2/leaky", {"fail": True}, retry={"constant": {"attempts": 1}}),
        "-n",
        ns,
    )
    status = finished(running_operator, ns, "leaky-retry", timeout=120)["status"]
    assert status["phase"] == "Failed" and status["attempts"] == 2, status
    text = kubemill(cluster, "admin", "logs", "leaky-retry", "-n", ns).stdout
    assert text.count("--- attempt 1 ---") == 1 and text.count("--- attempt 2 ---") == 1, text
    assert text.count("the token is ***") == 2 and TOKEN not in text
    # retry: a new run, same args, the old one named; it fails again: the exit code says so.
    again = kubemill(cluster, "admin", "retry", "leaky-retry", "--watch", "-n", ns)
    assert again.returncode == 1, again.stderr
    assert "scriptrun leaky-retry-retry-" in again.stderr and "RuntimeError" in again.stderr
    retried = [
        r for r in cluster.get("scriptruns", "-n", ns)["items"] if r["metadata"]["name"] != "leaky-retry"
    ]
    assert retried[0]["spec"]["args"] == {"fail": True}
    assert retried[0]["metadata"]["annotations"]["kubemill.dev/retry-of"] == "leaky-retry"
    # Errors name the run.
    missing = kubemill(cluster, "admin", "logs", "no-such-run", "-n", ns)
    assert missing.returncode == 2 and "no-such-run" in missing.stderr


def two_step_flow(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Flow",
        "metadata": {"name": "two-steps", "namespace": ns},
        "spec": {
            "path": "f/day2/two_steps",
            "value": {
                "modules": [
                    {
                        "id": "first",
                        "value": {
                            "type": "rawscript",
                            "language": "python3",
                            "content": "def main(n: int):\n    print('first says', n)\n    return n + 1\n",
                            "input_transforms": {"n": {"type": "javascript", "expr": "flow_input.n"}},
                        },
                    },
                    {
                        "id": "second",
                        "value": {
                            "type": "rawscript",
                            "language": "python3",
                            "content": "def main(m: int):\n    print('second got', m)\n"
                            "    if m > 5:\n        raise ValueError(f'too big: {m}')\n    return m * 2\n",
                            "input_transforms": {"m": {"type": "javascript", "expr": "results.first"}},
                        },
                    },
                ]
            },
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        },
    }


def test_a_flow_run_from_the_cli_shows_its_steps_their_logs_and_fails_naming_the_step(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    cluster.apply(two_step_flow(ns))
    ok = kubemill(cluster, "admin", "submit", "f/day2/two_steps", "-i", '{"n": 1}', "--watch", "-n", ns)
    assert ok.returncode == 0, ok.stderr + running_operator.log()[-3000:]
    assert json.loads(ok.stdout) == 4
    assert "step first: Succeeded" in ok.stderr and "step second: Succeeded" in ok.stderr
    bad = kubemill(cluster, "admin", "submit", "f/day2/two_steps", "--arg", "n=9", "--watch", "-n", ns)
    assert bad.returncode == 1, bad.stderr
    assert "step second: Failed" in bad.stderr and "too big: 10" in bad.stderr
    failed = next(
        r["metadata"]["name"]
        for r in cluster.get("flowruns", "-n", ns)["items"]
        if r["status"].get("phase") == "Failed"
    )
    tree = kubemill(cluster, "admin", "get", "run", failed, "-n", ns)
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert lines[0].startswith(f"FlowRun {failed}  f/day2/two_steps  Failed")
    assert any(line.startswith("├─ first  Succeeded") and "→ 10" in line for line in lines), tree.stdout
    assert any(line.startswith("└─ second  Failed") and "too big: 10" in line for line in lines), tree.stdout
    step_log = kubemill(cluster, "admin", "logs", failed, "--step", "second", "-n", ns)
    assert step_log.returncode == 0, step_log.stderr
    assert "[second] second got 10" in step_log.stdout and "first says" not in step_log.stdout
    whole = kubemill(cluster, "admin", "logs", failed, "-n", ns).stdout
    assert whole.index("[first] first says 9") < whole.index("[second] second got 10")
    nostep = kubemill(cluster, "admin", "logs", failed, "--step", "third", "-n", ns)
    assert nostep.returncode == 2 and failed in nostep.stderr and "third" in nostep.stderr


def test_approve_and_reject_go_through_the_webhook_as_the_caller(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    grant_users(cluster, namespace)
    cluster.apply(approval_flow(namespace, "f/day2/approve_me", MANAGERS))
    start_run(cluster, namespace, "order-1", "f/day2/approve_me")
    start_run(cluster, namespace, "order-2", "f/day2/approve_me")
    wait_phase(cluster, namespace, "order-1", "Suspended")
    wait_phase(cluster, namespace, "order-2", "Suspended")
    # mallory is no approver: the webhook refuses her, and the message names the run and step.
    refused = kubemill(cluster, "mallory", "approve", "order-1", "manager_approval", "-n", namespace)
    assert refused.returncode == 2
    assert "flowrun order-1 step manager_approval" in refused.stderr
    assert "mallory@example.com may not approve" in refused.stderr, refused.stderr
    tree = kubemill(cluster, "admin", "get", "run", "order-1", "-n", namespace).stdout
    assert "waiting for approval of step manager_approval by alice@example.com, group:managers" in tree
    wrong = kubemill(cluster, "alice", "approve", "order-1", "prepare", "-n", namespace)
    assert wrong.returncode == 2 and "not waiting for approval" in wrong.stderr
    ok = kubemill(
        cluster,
        "alice",
        "approve",
        "order-1",
        "manager_approval",
        "--comment",
        "fine",
        "--payload",
        '{"a": 1}',
        "-n",
        namespace,
    )
    assert ok.returncode == 0, ok.stderr
    done = wait_phase(cluster, namespace, "order-1", "Succeeded")
    assert [(a["user"], a["decision"], a.get("comment")) for a in done["approvals"]] == [
        ("alice@example.com", "approve", "fine")
    ]
    no = kubemill(cluster, "alice", "reject", "order-2", "manager_approval", "-n", namespace)
    assert no.returncode == 0, no.stderr
    rejected = wait_phase(cluster, namespace, "order-2", "Failed")
    assert rejected["approvals"][0]["decision"] == "reject"


def test_cancel_from_the_cli_stops_a_running_script(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    code = "import time\n\ndef main():\n    print('started', flush=True)\n    time.sleep(120)\n"
    cluster.apply(script("sleepy", "f/day2/sleepy", "python3", code), "-n", ns)
    cluster.apply(script_run("sleepy-1", "f/day2/sleepy"), "-n", ns)
    # While it runs, the stored log follows it (refreshed every few seconds, masked like the end).
    wait_for(
        lambda: "started" in kubemill(cluster, "admin", "logs", "sleepy-1", "-n", ns).stdout,
        60,
        "the running run's stored log",
    )
    cancel = kubemill(cluster, "admin", "cancel", "sleepy-1", "-n", ns)
    assert cancel.returncode == 0, cancel.stderr
    assert finished(running_operator, ns, "sleepy-1")["status"]["phase"] == "Cancelled"
    again = kubemill(cluster, "admin", "cancel", "sleepy-1", "-n", ns)
    assert again.returncode == 2 and "sleepy-1 has already finished (Cancelled)" in again.stderr
    assert "started" in kubemill(cluster, "admin", "logs", "sleepy-1", "-n", ns).stdout


def test_retry_goes_on_from_the_failed_step_after_the_script_is_fixed(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    broken = "def main(m: int):\n    raise ValueError(f'cannot check {m}')\n"
    fixed = "def main(m: int):\n    print('checked', m)\n    return {'checked': m}\n"
    cluster.apply(script("check", "f/day2/check", "python3", broken), "-n", ns)
    flow = two_step_flow(ns)
    flow["spec"]["path"] = "f/day2/fixable"
    flow["metadata"]["name"] = "fixable"
    second = {
        "type": "script",
        "path": "f/day2/check",
        "input_transforms": {"m": {"type": "javascript", "expr": "results.first"}},
    }
    flow["spec"]["value"]["modules"][1]["value"] = second
    cluster.apply(flow)
    bad = kubemill(
        cluster, "admin", "submit", "f/day2/fixable", "--arg", "n=1", "--name", "fix-1", "--watch", "-n", ns
    )
    assert bad.returncode == 1 and "cannot check 2" in bad.stderr, bad.stderr
    first_child = cluster.get("flowrun", "fix-1", "-n", ns)["status"]["steps"]["first"]["run"]
    cluster.apply(script("check", "f/day2/check", "python3", fixed), "-n", ns)
    wait_for(
        lambda: cluster.get("script", "check", "-n", ns).get("status", {}).get("contentHash"), 30, "the fix"
    )
    again = kubemill(cluster, "admin", "retry", "fix-1", "--watch", "-n", ns)
    assert again.returncode == 0, again.stderr + running_operator.log()[-3000:]
    assert json.loads(again.stdout) == {"checked": 2}
    retried = next(r for r in cluster.get("flowruns", "-n", ns)["items"] if r["metadata"]["name"] != "fix-1")
    annotations = retried["metadata"]["annotations"]
    assert annotations["kubemill.dev/retry-of"] == "fix-1"
    assert annotations["kubemill.dev/retry-from"] == "failed-step"
    steps = retried["status"]["steps"]
    assert steps["first"]["run"] == first_child  # reused, not run again
    firsts = [r for r in cluster.get("scriptruns", "-n", ns)["items"] if r["spec"].get("stepId") == "first"]
    assert len(firsts) == 1
    # From the start: every step runs again.
    fresh = kubemill(cluster, "admin", "retry", "fix-1", "--from-start", "--watch", "-n", ns)
    assert fresh.returncode == 0, fresh.stderr
    firsts = [r for r in cluster.get("scriptruns", "-n", ns)["items"] if r["spec"].get("stepId") == "first"]
    assert len(firsts) == 2
    # A retry from the failed step of a run whose flow changed since is refused, naming why.
    flow["spec"]["value"]["modules"][0]["summary"] = "changed"
    cluster.apply(flow)
    changed = kubemill(cluster, "admin", "retry", "fix-1", "--watch", "-n", ns)
    assert changed.returncode == 1
    assert "RetryNotPossible" in changed.stderr and "another version of the flow" in changed.stderr


def test_logs_follow_prints_a_running_run_as_it_goes_and_ends_with_it(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    code = (
        "import time\n\ndef main():\n"
        "    for i in range(4):\n        print(f'tick {i}', flush=True)\n        time.sleep(3)\n"
        "    return 'done'\n"
    )
    cluster.apply(script("ticker", "f/day2/ticker", "python3", code), "-n", ns)
    cluster.apply(script_run("ticker-1", "f/day2/ticker"), "-n", ns)
    exe = REPO / ".venv" / "bin" / "kubemill"
    argv = [str(exe), "logs", "ticker-1", "-f", "-n", ns, f"--kubeconfig={cluster.kubeconfig_for('admin')}"]
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env()
    ) as follow:
        reader = threading.Thread(target=lambda: lines.extend(follow.stdout or []), daemon=True)
        reader.start()
        try:
            wait_for(lambda: len(lines) >= 2, 60, "the first lines of the followed log")
            running = cluster.get("scriptrun", "ticker-1", "-n", ns)["status"]["phase"]
            follow.wait(timeout=90)
            reader.join(timeout=10)
            err = follow.stderr.read() if follow.stderr else ""
        finally:
            follow.kill()
    assert running == "Running", "the first lines came while the run was still running"
    assert follow.returncode == 0, err
    assert "".join(lines).splitlines() == ["--- attempt 1 ---", "tick 0", "tick 1", "tick 2", "tick 3"]
    assert cluster.get("scriptrun", "ticker-1", "-n", ns)["status"]["phase"] == "Succeeded"
