"""ScriptRuns on the real control plane, one behaviour per test: languages, invalid args, syntax errors,
failures, timeouts, cancellation, retries, large results, secret masking, concurrency limits, many runs."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.integration.test_operator import finished, script, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster


def phase_of(cluster: Cluster, namespace: str, name: str) -> str:
    run = cluster.get("scriptrun", name, "-n", namespace)
    return str(run.get("status", {}).get("phase", ""))


def jobs_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get("jobs", "-n", namespace)["items"]
    return items


def test_bash_script_gets_its_args(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    code = 'name="$1"\ncount="${2:-1}"\necho "{\\"name\\": \\"$name\\", \\"count\\": $count}"\n'
    cluster.apply(script("greet", "f/demo/greet_sh", "bash", code), "-n", ns)
    cluster.apply(script_run("greet-1", "f/demo/greet_sh", {"name": "ada", "count": "3"}), "-n", ns)
    status = finished(running_operator, ns, "greet-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"name": "ada", "count": 3}


def test_typescript_script_runs_in_deno(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    code = "export async function main(a: number, b: number = 2) {\n  return { sum: a + b };\n}\n"
    cluster.apply(script("add", "f/demo/add_ts", "typescript", code), "-n", ns)
    cluster.apply(script_run("add-1", "f/demo/add_ts", {"a": 40}), "-n", ns)
    status = finished(running_operator, ns, "add-1", timeout=180)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"sum": 42}


def test_invalid_args_fail_at_once_naming_the_field_and_create_no_job(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "def main(count: int, label: str = 'x'):\n    return count\n"
    cluster.apply(script("count", "f/demo/count", "python3", code), "-n", namespace)
    cluster.apply(script_run("count-1", "f/demo/count", {"count": "many"}), "-n", namespace)
    status = finished(running_operator, namespace, "count-1", timeout=30)["status"]
    assert status["phase"] == "Failed"
    assert status["error"]["name"] == "InvalidArgs"
    assert "count" in status["error"]["message"] and "integer" in status["error"]["message"]
    assert status.get("attempts", 0) == 0
    assert jobs_of(cluster, namespace) == []


def test_syntax_error_makes_the_script_not_ready_naming_the_line(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "def main(x: int):\n    y = [1, 2\n    return x\n"
    cluster.apply(script("broken", "f/demo/broken", "python3", code), "-n", namespace)

    def ready() -> dict[str, Any] | None:
        conditions = cluster.get("script", "broken", "-n", namespace).get("status", {}).get("conditions")
        return conditions[0] if conditions else None

    cond = wait_for(ready, 30, "the Script's Ready condition")
    assert cond["status"] == "False"
    assert cond["reason"] == "SyntaxError"
    assert "line 2" in cond["message"]
    cluster.apply(script_run("broken-1", "f/demo/broken", {"x": 1}), "-n", namespace)
    status = finished(running_operator, namespace, "broken-1", timeout=30)["status"]
    assert status["phase"] == "Failed" and status["error"]["name"] == "ScriptNotReady"
    assert jobs_of(cluster, namespace) == []


def test_a_failing_script_records_its_error_envelope(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "def main(order_id: str):\n    raise ValueError(f'order {order_id} is not valid')\n"
    cluster.apply(script("fail", "f/demo/fail", "python3", code), "-n", namespace)
    cluster.apply(script_run("fail-1", "f/demo/fail", {"order_id": "o-7"}), "-n", namespace)
    status = finished(running_operator, namespace, "fail-1")["status"]
    assert status["phase"] == "Failed"
    assert status["error"]["name"] == "ValueError"
    assert status["error"]["message"] == "order o-7 is not valid"
    assert "Traceback" in status["error"].get("stack", "") or "main" in status["error"].get("stack", "")
    assert status["conditions"][0]["reason"] == "ValueError"


def test_timeout_fails_the_run_with_reason_timeout(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "import time\n\ndef main():\n    time.sleep(60)\n"
    cluster.apply(script("slow", "f/demo/slow", "python3", code, timeoutSeconds=2), "-n", namespace)
    cluster.apply(script_run("slow-1", "f/demo/slow"), "-n", namespace)
    status = finished(running_operator, namespace, "slow-1", timeout=60)["status"]
    assert status["phase"] == "Failed", status
    assert status["error"]["name"] == "Timeout"
    assert status["conditions"][0]["reason"] == "Timeout"
    wait_for(lambda: jobs_of(cluster, namespace) == [], 30, "the timed-out Job to be deleted")


def test_cancel_annotation_stops_the_pod_and_ends_the_run_cancelled(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "import time\n\ndef main():\n    time.sleep(120)\n"
    cluster.apply(script("sleepy", "f/demo/sleepy", "python3", code), "-n", namespace)
    cluster.apply(script_run("sleepy-1", "f/demo/sleepy"), "-n", namespace)
    wait_for(lambda: phase_of(cluster, namespace, "sleepy-1") == "Running", 30, "the run to start")
    wait_for(
        lambda: [
            p for p in cluster.get("pods", "-n", namespace)["items"] if p["status"].get("phase") == "Running"
        ],
        30,
        "the runner pod to run",
    )
    cluster.kubectl("annotate", "scriptrun/sleepy-1", "kubemill.dev/cancel=true", "-n", namespace)
    status = finished(running_operator, namespace, "sleepy-1", timeout=30)["status"]
    assert status["phase"] == "Cancelled"
    wait_for(lambda: cluster.get("pods", "-n", namespace)["items"] == [], 30, "the runner pod to be gone")
    assert jobs_of(cluster, namespace) == []


@pytest.fixture
def counter() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP endpoint counting calls: the n-th call answers n (runner pods share the host network)."""
    calls: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(1)
            body = str(len(calls)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", calls
    server.shutdown()
    server.server_close()


def test_retries_until_success(
    running_operator: Operator, cluster: Cluster, namespace: str, counter: tuple[str, list[int]]
) -> None:
    url, calls = counter
    code = (
        "import urllib.request\n\n"
        "def main(url: str):\n"
        "    n = int(urllib.request.urlopen(url).read())\n"
        "    if n < 3:\n"
        "        raise RuntimeError(f'attempt {n} fails')\n"
        "    return {'succeeded_on': n}\n"
    )
    retry = {
        "constant": {"attempts": 1, "seconds": 1},
        "exponential": {"attempts": 2, "multiplier": 1, "seconds": 1},
    }
    cluster.apply(script("flaky", "f/demo/flaky", "python3", code, retry=retry), "-n", namespace)
    cluster.apply(script_run("flaky-1", "f/demo/flaky", {"url": url}), "-n", namespace)
    status = finished(running_operator, namespace, "flaky-1", timeout=120)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"succeeded_on": 3}
    assert status["attempts"] == 3
    assert len(calls) == 3


def test_a_1_mib_result_is_kept_in_a_configmap_owned_by_the_run(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "def main(n: int):\n    return 'x' * n\n"
    size = 1024 * 1024 - 2048
    cluster.apply(script("big", "f/demo/big", "python3", code), "-n", namespace)
    cluster.apply(script_run("big-1", "f/demo/big", {"n": size}), "-n", namespace)
    run = finished(running_operator, namespace, "big-1")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert "result" not in status
    ref = status["resultRef"]
    cm = cluster.get("configmap", ref["name"], "-n", namespace)
    assert json.loads(cm["data"][ref["key"]]) == "x" * size
    assert cm["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]


def test_a_2_mib_result_fails_the_run_with_result_too_large(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "def main(n: int):\n    return 'x' * n\n"
    cluster.apply(script("huge", "f/demo/huge", "python3", code), "-n", namespace)
    cluster.apply(script_run("huge-1", "f/demo/huge", {"n": 2 * 1024 * 1024}), "-n", namespace)
    status = finished(running_operator, namespace, "huge-1")["status"]
    assert status["phase"] == "Failed", status
    assert status["error"]["name"] == "ResultTooLarge"


def test_secret_values_a_script_prints_never_reach_status_or_events(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    secret_value = "s3cr3t-T0ken-4242"
    cluster.kubectl(
        "create", "secret", "generic", "api-token", f"--from-literal=token={secret_value}", "-n", ns
    )
    cluster.apply(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Variable",
            "metadata": {"name": "api-token"},
            "spec": {
                "path": "f/demo/api_token",
                "isSecret": True,
                "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}},
            },
        },
        "-n",
        ns,
    )
    code = (
        "import wmill\n\n"
        "def main(fail: bool = False):\n"
        "    token = wmill.get_variable('f/demo/api_token')\n"
        "    print('the token is', token)\n"
        "    if fail:\n"
        "        raise RuntimeError(f'bad token {token}')\n"
        "    return {'token': token, 'length': len(token)}\n"
    )
    cluster.apply(script("leaky", "f/demo/leaky", "python3", code, resources=["f/demo/api_token"]), "-n", ns)
    cluster.apply(script_run("leaky-ok", "f/demo/leaky"), "-n", ns)
    cluster.apply(script_run("leaky-fail", "f/demo/leaky", {"fail": True}), "-n", ns)
    ok = finished(running_operator, ns, "leaky-ok")["status"]
    failed = finished(running_operator, ns, "leaky-fail")["status"]
    assert ok["phase"] == "Succeeded", ok
    assert ok["result"] == {"token": "***", "length": len(secret_value)}
    assert failed["phase"] == "Failed", failed
    assert failed["error"]["message"] == "bad token ***"
    everything = cluster.kubectl("get", "scriptruns,events", "-n", ns, "-o", "json").stdout
    assert secret_value not in everything
    assert "bad token ***" in everything  # the failure is told, masked


def test_concurrency_limit_keeps_extra_runs_pending_with_a_reason(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "import time\n\ndef main(i: int):\n    time.sleep(3)\n    return i\n"
    cluster.apply(script("one", "f/demo/one_at_a_time", "python3", code, concurrencyLimit=1), "-n", namespace)
    for i in range(3):
        cluster.apply(script_run(f"one-{i}", "f/demo/one_at_a_time", {"i": i}), "-n", namespace)

    def waiting() -> list[dict[str, Any]]:
        runs = cluster.get("scriptruns", "-n", namespace)["items"]
        return [
            r
            for r in runs
            if (r.get("status", {}).get("conditions") or [{}])[0].get("reason") == "ConcurrencyLimit"
        ]

    pending = wait_for(waiting, 30, "a run waiting for the concurrency limit")
    assert pending[0]["status"]["phase"] == "Pending"
    assert "concurrencyLimit is 1" in pending[0]["status"]["conditions"][0]["message"]
    max_running = 0
    for i in range(3):

        def done(name: str = f"one-{i}") -> bool:
            nonlocal max_running
            runs = cluster.get("scriptruns", "-n", namespace)["items"]
            max_running = max(max_running, sum(r.get("status", {}).get("phase") == "Running" for r in runs))
            return phase_of(cluster, namespace, name) == "Succeeded"

        wait_for(done, 90, f"one-{i} to succeed")
    assert max_running == 1


def test_twenty_concurrent_runs_all_succeed(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    code = "def main(i: int):\n    return i * i\n"
    cluster.apply(script("square", "f/demo/square", "python3", code), "-n", namespace)
    manifests = [script_run(f"sq-{i}", "f/demo/square", {"i": i}) for i in range(20)]
    cluster.kubectl("create", "-n", namespace, "-f", "-", input="\n".join(json.dumps(m) for m in manifests))

    def all_done() -> list[dict[str, Any]] | None:
        runs = cluster.get("scriptruns", "-n", namespace)["items"]
        final = [r for r in runs if r.get("status", {}).get("phase") in ("Succeeded", "Failed")]
        return runs if len(final) == 20 else None

    runs = wait_for(all_done, 180, "20 runs to finish")
    results = {r["metadata"]["name"]: (r["status"]["phase"], r["status"].get("result")) for r in runs}
    errors = {r["metadata"]["name"]: r["status"].get("error") for r in runs if r["status"].get("error")}
    assert results == {f"sq-{i}": ("Succeeded", i * i) for i in range(20)}, errors
    wait_for(lambda: jobs_of(cluster, namespace) == [], 60, "every Job to be collected")


GO_SCRIPT = """package inner

import "fmt"

func main(name string, times int) (interface{}, error) {
	return map[string]interface{}{"greeting": fmt.Sprintf("hello %s", name), "times": times}, nil
}
"""


def test_go_script_runs(running_operator: Operator, cluster: Cluster, restricted_namespace: str) -> None:
    ns = restricted_namespace
    cluster.apply(script("hello-go", "f/demo/hello_go", "go", GO_SCRIPT), "-n", ns)
    cluster.apply(script_run("hello-go-1", "f/demo/hello_go", {"name": "gopher", "times": 2}), "-n", ns)
    status = finished(running_operator, ns, "hello-go-1", timeout=420)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["result"] == {"greeting": "hello gopher", "times": 2}


def test_history_limit_keeps_the_newest_finished_runs(
    running_operator: Operator, cluster: Cluster, namespace: str
) -> None:
    manifest = script("tiny", "f/demo/tiny", "python3", "def main(i: int):\n    return i\n")
    manifest["metadata"]["annotations"] = {"kubemill.dev/history-limit": "2"}
    cluster.apply(manifest, "-n", namespace)
    for i in range(4):
        cluster.apply(script_run(f"tiny-{i}", "f/demo/tiny", {"i": i}), "-n", namespace)
        finished(running_operator, namespace, f"tiny-{i}")

    def kept() -> list[str] | None:
        names = sorted(r["metadata"]["name"] for r in cluster.get("scriptruns", "-n", namespace)["items"])
        return names if len(names) == 2 else None

    assert wait_for(kept, 30, "the history to be trimmed to 2 runs") == ["tiny-2", "tiny-3"]


def test_state_passes_from_one_run_of_a_script_to_the_next(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    code = (
        "import wmill\n\n"
        "def main():\n"
        "    n = (wmill.get_state() or {}).get('n', 0) + 1\n"
        "    wmill.set_state({'n': n})\n"
        "    return n\n"
    )
    cluster.apply(script("counter", "f/demo/counter", "python3", code), "-n", ns)
    results = []
    for i in range(3):
        cluster.apply(script_run(f"counter-{i}", "f/demo/counter"), "-n", ns)
        results.append(finished(running_operator, ns, f"counter-{i}")["status"].get("result"))
    assert results == [1, 2, 3]
