"""Flows on the real control plane: FlowRuns driven by the operator, steps as ScriptRuns run by runner pods.

What a user sees is asserted: the FlowRun's phase, steps and result (`kubectl get flowrun -o json`), its child
runs (labelled and owned by it), the Flow's Ready condition.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Cluster, wait_for
from tests.integration.test_approvals import annotate, grant_users, start_run, status, wait_phase
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

API = "kubemill.dev/v1alpha1"


def script(namespace: str, path: str, content: str, language: str = "python3") -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Script",
        "metadata": {"name": path.rsplit("/", 1)[-1].replace("_", "-"), "namespace": namespace},
        "spec": {"path": path, "language": language, "content": content},
    }


def flow(namespace: str, path: str, modules: list[dict[str, Any]], **value: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Flow",
        "metadata": {"name": path.rsplit("/", 1)[-1].replace("_", "-"), "namespace": namespace},
        "spec": {"path": path, "value": {"modules": modules, **value}},
    }


def js(expr: str) -> dict[str, str]:
    return {"type": "javascript", "expr": expr}


def step(step_id: str, path: str, **inputs: dict[str, Any]) -> dict[str, Any]:
    return {"id": step_id, "value": {"type": "script", "path": path, "input_transforms": inputs}}


def children(cluster: Cluster, namespace: str, kind: str = "scriptruns") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get(kind, "-n", namespace)["items"]
    return [i for i in items if "kubemill.dev/flow-run-uid" in (i["metadata"].get("labels") or {})]


def wait_ready(cluster: Cluster, namespace: str, name: str, expected: str = "True") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        conditions = (cluster.get("flow", name, "-n", namespace).get("status") or {}).get("conditions") or []
        found = next((c for c in conditions if c["type"] == "Ready"), None)
        return found if found and found["status"] == expected else None

    return wait_for(ready, 60, f"flow {name} Ready={expected}")


# --- the brief's order flow, with the cluster's users as approvers ------------------------------------------

VALIDATE = """
def main(order: dict):
    if not order.get("items"):
        raise ValueError("an order needs items")
    return {"order_id": "o-" + str(order["total"]), "total": order["total"], "items": order["items"],
            "customer_email": order["customer_email"], "shipping_address": order["shipping_address"]}
"""
CHECK = "def main(items: list):\n    return {'available': True, 'count': len(items)}\n"
PAY = "def main(order_id: str, amount: float):\n    return {'charged': amount, 'order_id': order_id}\n"
SHIP = "def main(order_id: str, shipping_address: dict):\n    return {'tracking_number': 'T-' + order_id}\n"
CONFIRM = "def main(email: str, order_details: dict):\n    return {'sent_to': email, **order_details}\n"

ORDER_MODULES: list[dict[str, Any]] = [
    step("validate_order", "f/order_processing/validate_order", order=js("flow_input.order")),
    step("check_inventory", "f/inventory/check_availability", items=js("results.validate_order.items")),
    {
        "id": "route_by_value",
        "value": {
            "type": "branchone",
            "branches": [
                {
                    "summary": "High Value Order",
                    "expr": "results.validate_order.total > 5000",
                    "modules": [
                        {
                            "id": "request_approval",
                            "value": {
                                "type": "approval",
                                "timeout": 86400,
                                "approvers": ["alice@example.com", "group:managers"],
                            },
                        },
                        step(
                            "process_approved",
                            "f/payments/process_payment",
                            order_id=js("results.validate_order.order_id"),
                            amount=js("results.validate_order.total"),
                        ),
                    ],
                },
                {
                    "summary": "Normal Order",
                    "expr": "results.validate_order.total <= 5000",
                    "modules": [
                        step(
                            "process_normal",
                            "f/payments/process_payment",
                            order_id=js("results.validate_order.order_id"),
                            amount=js("results.validate_order.total"),
                        )
                    ],
                },
            ],
        },
    },
    step(
        "create_shipment",
        "f/fulfillment/create_shipment",
        order_id=js("results.validate_order.order_id"),
        shipping_address=js("results.validate_order.shipping_address"),
    ),
    step(
        "send_confirmation",
        "f/notifications/send_order_confirmation",
        email=js("results.validate_order.customer_email"),
        order_details=js(
            "{\n  order_id: results.validate_order.order_id,\n  total: results.validate_order.total,\n"
            "  tracking_number: results.create_shipment.tracking_number\n}"
        ),
    ),
]


def install_order_flow(cluster: Cluster, namespace: str) -> None:
    for path, code in [
        ("f/order_processing/validate_order", VALIDATE),
        ("f/inventory/check_availability", CHECK),
        ("f/payments/process_payment", PAY),
        ("f/fulfillment/create_shipment", SHIP),
        ("f/notifications/send_order_confirmation", CONFIRM),
    ]:
        cluster.apply(script(namespace, path, code))
    manifest = flow(namespace, "f/order_processing/order_flow", ORDER_MODULES)
    manifest["spec"]["schema"] = {
        "type": "object",
        "properties": {
            "order": {
                "type": "object",
                "properties": {"customer_email": {"type": "string", "format": "email"}},
                "required": ["customer_email", "items", "shipping_address"],
            }
        },
        "required": ["order"],
    }
    cluster.apply(manifest)
    wait_ready(cluster, namespace, "order-flow")


def order(total: int) -> dict[str, Any]:
    return {
        "customer_email": "c@example.com",
        "total": total,
        "items": [{"sku": "a"}],
        "shipping_address": {"city": "Lyon"},
    }


def test_a_small_order_goes_straight_through(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    install_order_flow(cluster, namespace)
    start_run(cluster, namespace, "small", "f/order_processing/order_flow", {"order": order(40)})
    done = wait_phase(cluster, namespace, "small", "Succeeded", timeout=120)
    assert done["result"] == {
        "sent_to": "c@example.com",
        "order_id": "o-40",
        "total": 40,
        "tracking_number": "T-o-40",
    }
    assert done["steps"]["route_by_value"]["branch"] == 1
    assert "request_approval" not in done["steps"]
    runs = children(cluster, namespace)
    assert sorted(r["spec"]["stepId"] for r in runs) == [
        "check_inventory",
        "create_shipment",
        "process_normal",
        "send_confirmation",
        "validate_order",
    ]
    assert all(r["metadata"]["ownerReferences"][0]["name"] == "small" for r in runs)
    assert all(done["steps"][r["spec"]["stepId"]]["run"] == r["metadata"]["name"] for r in runs)
    finished = (
        f'kubemill_flow_runs_finished_total{{namespace="{namespace}",path="f/order_processing/order_flow",'
    )
    assert finished + 'phase="Succeeded"} 1.0' in running_operator.metrics()
    assert "kubemill_flow_reconcile_duration_seconds_bucket" in running_operator.metrics()


def test_a_large_order_waits_for_a_manager(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    grant_users(cluster, namespace)
    install_order_flow(cluster, namespace)
    start_run(cluster, namespace, "large", "f/order_processing/order_flow", {"order": order(12000)})
    waiting = wait_phase(cluster, namespace, "large", "Suspended", timeout=120)
    assert waiting["currentStep"] == "request_approval"
    refused = annotate(cluster, namespace, "large", "mallory", "kubemill.dev/approve=request_approval")
    assert refused.returncode != 0 and "mallory@example.com may not approve" in refused.stderr
    assert status(cluster, namespace, "large")["phase"] == "Suspended"
    annotate(cluster, namespace, "large", "alice", "kubemill.dev/approve=request_approval", check=True)
    done = wait_phase(cluster, namespace, "large", "Succeeded", timeout=120)
    assert done["result"]["total"] == 12000
    assert done["steps"]["process_approved"]["result"] == {"charged": 12000, "order_id": "o-12000"}
    assert [(a["user"], a["decision"]) for a in done["approvals"]] == [("alice@example.com", "approve")]


def test_invalid_input_fails_the_run_before_any_step(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    install_order_flow(cluster, namespace)
    bad = {**order(40), "customer_email": "not an email"}
    start_run(cluster, namespace, "bad-input", "f/order_processing/order_flow", {"order": bad})
    failed = wait_phase(cluster, namespace, "bad-input", "Failed")
    assert failed["error"]["name"] == "InvalidInput"
    assert "order.customer_email" in failed["error"]["message"]
    assert children(cluster, namespace) == []


# --- loops, failure module, subflows ------------------------------------------------------------------------

SLOW = "import time\n\ndef main(x: int):\n    time.sleep(1.0)\n    return x * 10\n"


def test_a_parallel_loop_never_runs_more_children_than_its_parallelism(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/loops/slow", SLOW))
    loop = {
        "id": "each",
        "value": {
            "type": "forloopflow",
            "iterator": js("flow_input.items"),
            "parallel": True,
            "parallelism": 2,
            "modules": [step("work", "f/loops/slow", x=js("flow_input.iter.value"))],
        },
    }
    cluster.apply(flow(namespace, "f/loops/fan", [loop]))
    wait_ready(cluster, namespace, "fan")
    start_run(cluster, namespace, "fan", "f/loops/fan", {"items": [1, 2, 3, 4, 5, 6]})
    most = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        runs = children(cluster, namespace)
        running = [r for r in runs if (r.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        most = max(most, len(running))
        assert len(running) <= 2, [r["metadata"]["name"] for r in running]
        if status(cluster, namespace, "fan").get("phase") == "Succeeded":
            break
        time.sleep(0.2)
    done = wait_phase(cluster, namespace, "fan", "Succeeded", timeout=5)
    assert done["result"] == [10, 20, 30, 40, 50, 60]
    assert most == 2
    assert len(children(cluster, namespace)) == 6


def test_the_failure_module_runs_and_the_run_still_fails(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/fail/boom", "def main():\n    raise RuntimeError('card declined')\n"))
    cluster.apply(
        script(
            namespace, "f/fail/report", "def main(error: dict):\n    return {'reported': error['message']}\n"
        )
    )
    cluster.apply(
        flow(
            namespace,
            "f/fail/guarded",
            [step("charge", "f/fail/boom")],
            failure_module=step("on_failure", "f/fail/report", error=js("previous_result.error")),
        )
    )
    wait_ready(cluster, namespace, "guarded")
    start_run(cluster, namespace, "guarded", "f/fail/guarded", {})
    failed = wait_phase(cluster, namespace, "guarded", "Failed", timeout=120)
    assert failed["error"]["step"] == "charge"
    assert "card declined" in failed["error"]["message"]
    assert failed["result"] == {"reported": failed["steps"]["charge"]["error"]["message"]}


def test_a_subflow_runs_as_a_child_flowrun(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/sub/double", "def main(n: int):\n    return n * 2\n"))
    cluster.apply(flow(namespace, "f/sub/inner", [step("double", "f/sub/double", n=js("flow_input.n"))]))
    outer = [
        {"id": "call", "value": {"type": "flow", "path": "f/sub/inner", "input_transforms": {"n": js("21")}}},
        step("again", "f/sub/double", n=js("results.call")),
    ]
    cluster.apply(flow(namespace, "f/sub/outer", outer))
    wait_ready(cluster, namespace, "outer")
    start_run(cluster, namespace, "outer", "f/sub/outer", {})
    done = wait_phase(cluster, namespace, "outer", "Succeeded", timeout=120)
    assert done["result"] == 84
    [sub] = children(cluster, namespace, "flowruns")
    assert sub["metadata"]["name"] == done["steps"]["call"]["run"]
    assert sub["status"]["phase"] == "Succeeded" and sub["spec"]["flowRun"] == "outer"


# --- cancel, crash, bad flows -------------------------------------------------------------------------------


def test_cancelling_a_run_deletes_the_children_in_flight(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/cancel/wait", "import time\n\ndef main():\n    time.sleep(120)\n"))
    cluster.apply(
        flow(namespace, "f/cancel/long", [step("wait", "f/cancel/wait"), step("never", "f/cancel/wait")])
    )
    wait_ready(cluster, namespace, "long")
    start_run(cluster, namespace, "long", "f/cancel/long", {})
    wait_for(lambda: len(children(cluster, namespace)) == 1, 60, "the first child run")
    cluster.kubectl("annotate", "flowrun/long", "-n", namespace, "kubemill.dev/cancel=true")
    cancelled = wait_phase(cluster, namespace, "long", "Cancelled")
    assert cancelled["error"]["name"] == "Cancelled"
    wait_for(lambda: children(cluster, namespace) == [], 60, "the child run deleted")


def test_an_operator_killed_mid_flow_loses_no_step_and_runs_none_twice(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    tick = "import time\n\ndef main(i: int):\n    time.sleep(2)\n    return i\n"
    cluster.apply(script(namespace, "f/crash/tick", tick))
    modules = [step(f"s{i}", "f/crash/tick", i=js(str(i))) for i in range(8)]
    cluster.apply(flow(namespace, "f/crash/steps", modules))
    wait_ready(cluster, namespace, "steps")
    start_run(cluster, namespace, "steps", "f/crash/steps", {})

    def pods(phases: tuple[str, ...]) -> set[str]:
        items = cluster.get("pods", "-n", namespace)["items"]
        return {p["metadata"]["name"] for p in items if p["status"].get("phase") in phases}

    # Kill the operator while a step's pod runs (its Job already exists), so that pod finishes while the
    # operator is down and the restarted operator has to pick its result up from the Job.
    wait_for(
        lambda: len(children(cluster, namespace)) >= 3 and pods(("Running",)),
        120,
        "a third step's pod running",
    )
    running = pods(("Pending", "Running"))
    running_operator.kill()
    wait_for(
        lambda: running & pods(("Succeeded",)),
        60,
        "a step's pod running at the kill finishing while the operator is down",
    )
    running_operator.start()
    done = wait_phase(cluster, namespace, "steps", "Succeeded", timeout=180)
    assert done["result"] == 7
    runs = children(cluster, namespace)
    assert sorted(r["spec"]["stepId"] for r in runs) == [f"s{i}" for i in range(8)]


def test_a_flow_with_a_bad_expression_or_unknown_script_is_not_ready(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/bad/ok", "def main(x: int = 0):\n    return x\n"))
    cluster.apply(flow(namespace, "f/bad/syntax", [step("broken", "f/bad/ok", x=js("results.a +* 2"))]))
    cluster.apply(flow(namespace, "f/bad/missing", [step("lost", "f/bad/nowhere")]))
    syntax = wait_ready(cluster, namespace, "syntax", "False")
    assert syntax["message"].startswith("step broken: ") and syntax["reason"] == "InvalidFlow"
    missing = wait_ready(cluster, namespace, "missing", "False")
    assert "step lost: unknown script path 'f/bad/nowhere'" in missing["message"]
    cluster.apply(script(namespace, "f/bad/nowhere", "def main():\n    return 1\n"))
    wait_ready(cluster, namespace, "missing", "True")
    start_run(cluster, namespace, "on-broken", "f/bad/syntax", {})
    failed = wait_phase(cluster, namespace, "on-broken", "Failed")
    assert failed["error"]["name"] == "FlowNotReady" and "step broken" in failed["error"]["message"]


def test_an_endless_expression_fails_its_step_and_the_operator_goes_on(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/spin/ok", "def main(x: int = 0):\n    return x\n"))
    spin = {
        "id": "spin",
        "value": {"type": "script", "path": "f/spin/ok", "input_transforms": {"x": js("while(true){}")}},
    }
    cluster.apply(flow(namespace, "f/spin/forever", [spin]))
    cluster.apply(flow(namespace, "f/spin/fine", [step("fine", "f/spin/ok", x=js("3"))]))
    wait_ready(cluster, namespace, "forever")
    start_run(cluster, namespace, "forever", "f/spin/forever", {})
    start_run(cluster, namespace, "fine", "f/spin/fine", {})
    failed = wait_phase(cluster, namespace, "forever", "Failed")
    assert failed["error"]["name"] == "ExpressionTimeout" and failed["error"]["step"] == "spin"
    assert wait_phase(cluster, namespace, "fine", "Succeeded", timeout=120)["result"] == 3
    assert json.dumps(failed).count("ExpressionTimeout") >= 1


def test_a_result_over_16_kib_is_kept_in_a_config_map(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/big/text", "def main(n: int):\n    return 'x' * n\n"))
    cluster.apply(flow(namespace, "f/big/flow", [step("text", "f/big/text", n=js("20000"))]))
    wait_ready(cluster, namespace, "flow")
    start_run(cluster, namespace, "big", "f/big/flow")
    done = wait_phase(cluster, namespace, "big", "Succeeded", timeout=120)
    assert "result" not in done
    assert done["resultRef"]["name"] == "big-result"
    assert done["resultRef"].get("key", "result.json") == "result.json"  # the default key is left out
    stored = cluster.get("configmap", "big-result", "-n", namespace)
    assert json.loads(stored["data"]["result.json"]) == "x" * 20000
    assert stored["metadata"]["ownerReferences"][0]["name"] == "big"
    assert done["steps"]["text"]["result"] == {"$ref": done["steps"]["text"]["run"]}
