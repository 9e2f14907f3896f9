"""Whole runs through advance() (driven locally with a fake clock): every module type and option."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kubemill.engine import ApprovalEvent, AwaitApproval, ChildObservation, CreateRun, RunError
from kubemill.local.driver import FakeClock, Run, drive
from kubemill.models.openflow import OpenFlow, load_flow_yaml

FIXTURES = Path(__file__).parent.parent / "fixtures" / "histories"


def make_flow(modules: list[dict[str, Any]], schema: dict[str, Any] | None = None, **value: Any) -> OpenFlow:
    return OpenFlow.model_validate({"summary": "t", "value": {"modules": modules, **value}, "schema": schema})


def script(step_id: str, path: str = "f/x/echo", **extra: Any) -> dict[str, Any]:
    inputs = extra.pop("inputs", {"x": {"type": "javascript", "expr": "previous_result"}})
    return {"id": step_id, "value": {"type": "script", "path": path, "input_transforms": inputs}, **extra}


def echo(action: CreateRun) -> Any:
    """Scripts for tests: `f/x/echo` returns its `x`; `f/x/fail` raises; `f/x/flaky` fails twice."""
    if action.script_path == "f/x/fail":
        raise RuntimeError(f"boom in {action.step}")
    if action.script_path == "f/x/flaky" and action.attempt < 2:
        raise RuntimeError(f"flaky attempt {action.attempt}")
    return action.args.get("x")


def run(flow: OpenFlow, args: dict[str, Any] | None = None, step: Any = echo, **kw: Any) -> Run:
    return drive(flow, args or {}, step, clock=kw.pop("clock", FakeClock()), **kw)


def test_sequential_scripts_pass_results_on() -> None:
    flow = make_flow(
        [
            script("a", inputs={"x": {"type": "javascript", "expr": "flow_input.n * 2"}}),
            script("b", inputs={"x": {"type": "javascript", "expr": "results.a + 1"}}),
            {"id": "c", "value": {"type": "identity"}},
        ]
    )
    done = run(flow, {"n": 20})
    assert (done.status.phase, done.status.result) == ("Succeeded", 41)
    assert done.status.steps["a"].run is not None and done.status.steps["c"].run is None


def test_rawscript_and_subflow_become_child_runs() -> None:
    seen: list[CreateRun] = []

    def record(action: CreateRun) -> Any:
        seen.append(action)
        return "ok"

    flow = make_flow(
        [
            {
                "id": "raw",
                "value": {
                    "type": "rawscript",
                    "language": "bash",
                    "content": "echo hi",
                    "input_transforms": {},
                },
            },
            {
                "id": "sub",
                "value": {
                    "type": "flow",
                    "path": "f/x/sub",
                    "input_transforms": {"a": {"type": "static", "value": 1}},
                },
            },
        ]
    )
    assert run(flow, step=record).status.result == "ok"
    assert seen[0].kind == "ScriptRun" and seen[0].script is not None and seen[0].script.content == "echo hi"
    assert (seen[1].kind, seen[1].flow_path, dict(seen[1].args)) == ("FlowRun", "f/x/sub", {"a": 1})


@pytest.mark.parametrize(("value", "expected"), [(7000, "big"), (10, "small"), (-1, "default")])
def test_branchone_takes_first_true_branch_else_default(value: int, expected: str) -> None:
    flow = make_flow(
        [
            {
                "id": "route",
                "value": {
                    "type": "branchone",
                    "branches": [
                        {
                            "expr": "flow_input.v > 5000",
                            "modules": [script("big", inputs={"x": {"type": "static", "value": "big"}})],
                        },
                        {
                            "expr": "flow_input.v >= 0",
                            "modules": [script("small", inputs={"x": {"type": "static", "value": "small"}})],
                        },
                    ],
                    "default": [script("dflt", inputs={"x": {"type": "static", "value": "default"}})],
                },
            },
        ]
    )
    assert run(flow, {"v": value}).status.result == expected


@pytest.mark.parametrize("parallel", [True, False])
def test_branchall_collects_results_and_skips_failures(parallel: bool) -> None:
    flow = make_flow(
        [
            {
                "id": "all",
                "value": {
                    "type": "branchall",
                    "parallel": parallel,
                    "branches": [
                        {"modules": [script("one", inputs={"x": {"type": "static", "value": 1}})]},
                        {"modules": [script("bad", path="f/x/fail")], "skip_failure": True},
                    ],
                },
            },
        ]
    )
    done = run(flow)
    assert done.status.phase == "Succeeded"
    assert done.status.result[0] == 1 and done.status.result[1]["error"]["message"] == "boom in bad"


def test_branchall_without_skip_failure_fails_the_flow() -> None:
    flow = make_flow(
        [
            {
                "id": "all",
                "value": {
                    "type": "branchall",
                    "branches": [{"modules": [script("bad", path="f/x/fail")], "skip_failure": False}],
                },
            }
        ]
    )
    done = run(flow)
    assert done.status.phase == "Failed" and done.status.error is not None
    assert done.status.error.step == "bad"


def test_forloop_iterates_with_iter_value_and_index() -> None:
    body = [
        script(
            "inner",
            inputs={"x": {"type": "javascript", "expr": "flow_input.iter.value + flow_input.iter.index"}},
        )
    ]
    flow = make_flow(
        [
            {
                "id": "loop",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "javascript", "expr": "flow_input.xs"},
                    "modules": body,
                },
            }
        ]
    )
    done = run(flow, {"xs": [10, 20, 30]})
    assert done.status.result == [10, 21, 32]
    assert set(done.status.steps) == {"loop"}, "iteration records are dropped once an iteration ends"


def test_forloop_skip_failures_keeps_errors_as_results() -> None:
    body = [script("inner", path="f/x/fail")]
    loop = {"type": "forloopflow", "iterator": {"type": "static", "value": [1, 2]}, "modules": body}
    assert run(make_flow([{"id": "l", "value": loop}])).status.result[1]["error"]["name"] == "RuntimeError"
    failing = make_flow([{"id": "l", "value": {**loop, "skip_failures": False}}])
    assert run(failing).status.phase == "Failed"


def test_whileloop_ends_through_stop_after_if_on_the_loop() -> None:
    body = [script("inner", inputs={"x": {"type": "javascript", "expr": "flow_input.iter.index"}})]
    flow = make_flow(
        [
            {
                "id": "w",
                "value": {"type": "whileloopflow", "modules": body},
                "stop_after_if": {"expr": "result >= 3"},
            }
        ]
    )
    assert run(flow).status.result == [0, 1, 2, 3]


def test_stop_after_if_inside_a_loop_breaks_only_the_loop() -> None:
    body = [
        script(
            "inner",
            inputs={"x": {"type": "javascript", "expr": "flow_input.iter.value"}},
            stop_after_if={"expr": "result == 2"},
        )
    ]
    flow = make_flow(
        [
            {
                "id": "l",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "static", "value": [1, 2, 3, 4]},
                    "modules": body,
                },
            },
            script("after", inputs={"x": {"type": "javascript", "expr": "results.l.length"}}),
        ]
    )
    assert run(flow).status.result == 2


def test_stop_after_all_iters_if_stops_the_flow() -> None:
    loop = {
        "type": "forloopflow",
        "iterator": {"type": "static", "value": [1, 2]},
        "modules": [{"id": "i", "value": {"type": "identity"}}],
    }
    flow = make_flow(
        [
            {
                "id": "l",
                "value": loop,
                "stop_after_all_iters_if": {"expr": "result.length == 2", "skip_if_stopped": True},
            },
            script("never", path="f/x/fail"),
        ]
    )
    done = run(flow)
    assert (done.status.phase, done.status.skipped) == ("Succeeded", True)


def test_stop_after_if_with_error_message_fails_the_flow() -> None:
    flow = make_flow(
        [
            script(
                "a",
                inputs={"x": {"type": "static", "value": 0}},
                stop_after_if={"expr": "result === 0", "error_message": "nothing to do"},
            ),
            script("never", path="f/x/fail"),
        ]
    )
    done = run(flow)
    assert done.status.phase == "Failed" and done.status.error is not None
    assert done.status.error.message == "nothing to do"


def test_skip_if_skips_and_previous_result_passes_over() -> None:
    flow = make_flow(
        [
            script("a", inputs={"x": {"type": "static", "value": "kept"}}),
            script("b", path="f/x/fail", skip_if={"expr": "previous_result == 'kept'"}),
            script("c"),
        ]
    )
    done = run(flow)
    assert done.status.result == "kept" and done.status.steps["b"].phase == "Skipped"


def test_retry_constant_then_exponential_with_delays() -> None:
    clock = FakeClock()
    start = clock.current
    retry = {
        "constant": {"attempts": 1, "seconds": 5},
        "exponential": {"attempts": 2, "multiplier": 1, "seconds": 3},
    }
    done = run(make_flow([script("f", path="f/x/flaky", retry=retry)]), clock=clock)
    assert done.status.phase == "Succeeded" and done.status.steps["f"].attempt == 2
    assert clock.current - start == timedelta(seconds=5 + 3)


def test_retry_if_false_means_no_retry() -> None:
    retry = {
        "constant": {"attempts": 3, "seconds": 1},
        "retry_if": {"expr": "result.error.message.includes('x')"},
    }
    done = run(make_flow([script("f", path="f/x/flaky", retry=retry)]))
    assert done.status.phase == "Failed" and done.status.steps["f"].attempt == 0


def test_continue_on_error_hands_the_error_on() -> None:
    flow = make_flow([script("a", path="f/x/fail", continue_on_error=True), script("b")])
    done = run(flow)
    assert done.status.phase == "Succeeded" and done.status.result["error"]["name"] == "RuntimeError"


def test_failure_module_gets_the_error_and_the_flow_still_fails() -> None:
    handler = script(
        "on_error", inputs={"x": {"type": "javascript", "expr": "previous_result.error.message"}}
    )
    done = run(make_flow([script("a", path="f/x/fail")], failure_module=handler))
    assert done.status.phase == "Failed" and done.status.result == "boom in a"
    assert done.status.error is not None and done.status.error.step == "a"


def test_sleep_waits_after_the_step() -> None:
    clock = FakeClock()
    start = clock.current
    done = run(make_flow([script("a", sleep=30), script("b")]), {"v": 1}, clock=clock)
    assert done.status.phase == "Succeeded" and clock.current - start == timedelta(seconds=30)


def test_timeout_fails_a_child_that_runs_too_long() -> None:
    def never_finishes(action: CreateRun) -> ChildObservation:
        return ChildObservation(phase="Running")

    clock = FakeClock()
    done = run(make_flow([script("slow", timeout=60)]), step=never_finishes, clock=clock)
    assert done.status.phase == "Failed" and done.status.error is not None
    assert done.status.error.name == "TimeoutError"


def test_expression_that_never_ends_fails_the_step_with_a_timeout() -> None:
    flow = make_flow([script("a", inputs={"x": {"type": "javascript", "expr": "while(true){}"}})])
    done = run(flow)
    assert done.status.phase == "Failed" and done.status.error is not None
    assert done.status.error.name == "ExpressionTimeout"


def test_mock_returns_its_value_without_a_child() -> None:
    done = run(make_flow([script("a", path="f/x/fail", mock={"enabled": True, "return_value": {"m": 1}})]))
    assert done.status.result == {"m": 1} and done.status.steps["a"].run is None


def test_invalid_input_fails_before_anything_starts_and_names_the_field() -> None:
    schema = {
        "type": "object",
        "properties": {"order": {"type": "object", "properties": {"total": {"type": "number"}}}},
        "required": ["order"],
    }
    done = run(make_flow([script("a", path="f/x/fail")], schema=schema), {"order": {"total": "x"}})
    assert done.status.phase == "Failed" and done.status.steps == {}
    assert done.status.error is not None and "order.total" in done.status.error.message


def test_early_return_publishes_the_result_once() -> None:
    from kubemill.engine import EarlyReturn, advance
    from kubemill.engine.actions import Observations
    from kubemill.engine.state import FlowRunStatus

    flow = make_flow([{"id": "a", "value": {"type": "identity"}}, script("b")], early_return="a")
    decision = advance(flow, FlowRunStatus(), Observations(run_name="r"), FakeClock().now())
    assert [a for a in decision.actions if isinstance(a, EarlyReturn)] and decision.status.early_result_sent


# --- approvals ---

ORDER = {"customer_email": "c@example.com", "items": [{"sku": "a"}], "shipping_address": {"city": "x"}}


def order_scripts(action: CreateRun) -> Any:
    path = action.script_path or ""
    if path.endswith("validate_order"):
        order = action.args["order"]
        return {"order_id": "o-1", **order}
    if path.endswith("check_availability"):
        return {"available": True}
    if path.endswith("process_payment"):
        return {"charged": action.args["amount"]}
    if path.endswith("create_shipment"):
        return {"tracking_number": "T-1"}
    return {"sent_to": action.args["email"], "details": action.args["order_details"]}


def test_brief_order_flow_small_order_goes_straight_through() -> None:
    flow = load_flow_yaml((FIXTURES / "order_processing.flow.yaml").read_text())
    done = run(flow, {"order": {**ORDER, "total": 120}}, order_scripts)
    assert done.status.phase == "Succeeded" and not done.status.approvals
    assert done.status.result == {
        "sent_to": "c@example.com",
        "details": {"order_id": "o-1", "total": 120, "tracking_number": "T-1"},
    }
    assert "process_normal" in done.status.steps and "request_approval" not in done.status.steps


def test_brief_order_flow_large_order_suspends_until_approved() -> None:
    flow = load_flow_yaml((FIXTURES / "order_processing.flow.yaml").read_text())
    asked: list[AwaitApproval] = []

    def approve(action: AwaitApproval, now: Any) -> list[ApprovalEvent]:
        asked.append(action)
        return [
            ApprovalEvent(step="request_approval", user="manager@example.com", decision="approve", at=now)
        ]

    done = run(flow, {"order": {**ORDER, "total": 9000}}, order_scripts, approve=approve)
    assert done.status.phase == "Succeeded" and done.status.result["details"]["total"] == 9000
    assert asked[0].approvers == ("admin@example.com", "manager@example.com")
    assert [(a.user, a.decision) for a in done.status.approvals] == [("manager@example.com", "approve")]
    assert done.status.steps["process_approved"].phase == "Succeeded"


def test_brief_order_flow_rejection_fails_with_the_comment() -> None:
    flow = load_flow_yaml((FIXTURES / "order_processing.flow.yaml").read_text())

    def reject(action: AwaitApproval, now: Any) -> list[ApprovalEvent]:
        return [
            ApprovalEvent(
                step="request_approval",
                user="admin@example.com",
                decision="reject",
                comment="too expensive",
                at=now,
            )
        ]

    done = run(flow, {"order": {**ORDER, "total": 9000}}, order_scripts, approve=reject)
    assert done.status.phase == "Failed" and done.status.error == RunError(
        name="ApprovalRejected",
        message="step request_approval was rejected by admin@example.com: too expensive",
        step="request_approval",
    )


def test_unlisted_approver_is_ignored_and_timeout_fails() -> None:
    flow = load_flow_yaml((FIXTURES / "order_processing.flow.yaml").read_text())
    clock = FakeClock()
    start = clock.current

    def mallory(action: AwaitApproval, now: Any) -> list[ApprovalEvent]:
        return [
            ApprovalEvent(step="request_approval", user="mallory@example.com", decision="approve", at=now)
        ]

    done = run(flow, {"order": {**ORDER, "total": 9000}}, order_scripts, approve=mallory, clock=clock)
    assert done.status.phase == "Failed" and done.status.error is not None
    assert done.status.error.name == "ApprovalTimeout" and not done.status.approvals
    assert clock.current - start == timedelta(seconds=86400)


# --- Windmill's semantics, one row each (tests/conformance runs the same through `kubemill run`) ---------


def ident(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "value": {"type": "identity"}, **extra}


def js_script(step_id: str, expr: str, path: str = "f/x/echo", **extra: Any) -> dict[str, Any]:
    return script(step_id, path=path, inputs={"x": {"type": "javascript", "expr": expr}}, **extra)


def loop(step_id: str, items: list[Any], body: list[dict[str, Any]], **value: Any) -> dict[str, Any]:
    iterator = {"type": "static", "value": items}
    extra = {k: value.pop(k) for k in ("retry", "stop_after_if") if k in value}
    modules = {"type": "forloopflow", "iterator": iterator, "modules": body, **value}
    return {"id": step_id, "value": modules, **extra}


def fails_on(*values: Any) -> Any:
    def step(action: CreateRun) -> Any:
        if action.args.get("x") in values:
            raise ValueError(f"bad {action.args.get('x')}")
        return action.args.get("x")

    return step


def fails_first_attempt(action: CreateRun) -> Any:
    """Fails the first attempt of whatever runs inside a retried container (the step path has no `@`)."""
    if "@" not in action.step and action.args.get("x") == 2:
        raise ValueError("first attempt")
    return action.args.get("x")


def error_2(step: str) -> dict[str, Any]:
    return {"error": {"name": "ValueError", "message": "bad 2", "step": step}}


SEMANTICS: list[tuple[str, list[dict[str, Any]], dict[str, Any], dict[str, Any], Any, str, Any]] = [
    # (case, modules, flow value options, args, step, phase, result)
    (
        "first previous_result is the input",
        [js_script("a", "previous_result.n")],
        {},
        {"n": 3},
        echo,
        "Succeeded",
        3,
    ),
    (
        "result is previous_result",
        [js_script("a", "1"), js_script("b", "result + 1")],
        {},
        {},
        echo,
        "Succeeded",
        2,
    ),
    (
        "flow_env in expressions",
        [js_script("a", "flow_env.k.deep")],
        {"flow_env": {"k": {"deep": [1]}}},
        {},
        echo,
        "Succeeded",
        [1],
    ),
    (
        "skip_expr true skips the run",
        [script("a", path="f/x/fail")],
        {"skip_expr": "flow_input.s"},
        {"s": True},
        echo,
        "Succeeded",
        None,
    ),
    (
        "skip_expr false runs",
        [js_script("a", "7")],
        {"skip_expr": "flow_input.s"},
        {"s": False},
        echo,
        "Succeeded",
        7,
    ),
    (
        "sequential loop failure keeps the results so far",
        [loop("l", [1, 2, 3], [js_script("s", "flow_input.iter.value")], skip_failures=False)],
        {},
        {},
        fails_on(2),
        "Failed",
        [1, error_2("l/1/s")],
    ),
    (
        "parallel loop failure keeps every result",
        [loop("l", [1, 2, 3], [js_script("s", "flow_input.iter.value")], skip_failures=False, parallel=True)],
        {},
        {},
        fails_on(2),
        "Failed",
        [1, error_2("l/1/s"), 3],
    ),
    (
        "a retried loop starts again",
        [
            loop(
                "l",
                [1, 2],
                [js_script("s", "flow_input.iter.value")],
                skip_failures=False,
                retry={"constant": {"attempts": 1, "seconds": 0}},
            )
        ],
        {},
        {},
        fails_first_attempt,
        "Succeeded",
        [1, 2],
    ),
    (
        "branchall skip_failure false fails with the list",
        [
            {
                "id": "b",
                "value": {
                    "type": "branchall",
                    "branches": [
                        {"skip_failure": False, "modules": [js_script("x1", "2")]},
                        {"modules": [js_script("x2", "1")]},
                    ],
                },
            }
        ],
        {},
        {},
        fails_on(2),
        "Failed",
        [error_2("x1"), 1],
    ),
    (
        "stop inside branchall stops with the list",
        [
            {
                "id": "b",
                "value": {
                    "type": "branchall",
                    "branches": [{"modules": [js_script("x1", "-1", stop_after_if={"expr": "result < 0"})]}],
                },
            },
            js_script("c", "9"),
        ],
        {},
        {},
        echo,
        "Succeeded",
        [-1],
    ),
    (
        "early stop with error_include_result",
        [
            js_script(
                "a", "5", stop_after_if={"expr": "true", "error_message": "no", "error_include_result": True}
            )
        ],
        {},
        {},
        echo,
        "Failed",
        {"error": {"name": "EarlyStopError", "message": "no", "step": "a", "result": 5}},
    ),
    (
        "steps without ids",
        [{"value": {"type": "identity"}}, {"value": {"type": "identity"}}],
        {},
        {"v": 1},
        echo,
        "Succeeded",
        {"v": 1},
    ),
]


@pytest.mark.parametrize(
    ("modules", "options", "args", "step", "phase", "result"),
    [row[1:] for row in SEMANTICS],
    ids=[row[0] for row in SEMANTICS],
)
def test_windmill_semantics(
    modules: list[dict[str, Any]],
    options: dict[str, Any],
    args: dict[str, Any],
    step: Any,
    phase: str,
    result: Any,
) -> None:
    done = run(make_flow(modules, **options), args, step=step)
    assert (done.status.phase, done.status.result) == (phase, result)


def test_flow_user_states_pass_from_step_to_step() -> None:
    seen: list[dict[str, Any]] = []

    def step(action: CreateRun) -> ChildObservation:
        seen.append(dict(action.flow_user_states))
        count = int(action.flow_user_states.get("n", 0)) + 1  # type: ignore[call-overload]
        return ChildObservation(phase="Succeeded", result=count, flow_user_states={"n": count})

    done = run(make_flow([script("a"), script("b"), script("c")]), step=step)
    assert seen == [{}, {"n": 1}, {"n": 2}] and done.status.user_states == {"n": 3}


def test_resumes_lists_every_payload_of_the_last_approval() -> None:
    def approve(action: AwaitApproval, now: Any) -> list[ApprovalEvent]:
        return [
            ApprovalEvent(step=action.step, user=u, decision="approve", payload=p, at=now)
            for u, p in (("ann", "first"), ("bob", "second"))
        ]

    flow = make_flow(
        [
            script("a", suspend={"required_events": 2}),
            js_script("b", "[resume, resumes]"),
        ]
    )
    assert run(flow, approve=approve).status.result == ["second", ["first", "second"]]


# --- cache_ttl, early_return delivery ---


def counting(calls: list[str]) -> Any:
    def step(action: CreateRun) -> Any:
        calls.append(action.step)
        return f"{action.args.get('x')}#{len(calls)}"

    return step


def test_step_cache_ttl_reuses_a_result_until_it_expires() -> None:
    calls: list[str] = []
    flow = make_flow([script("a", cache_ttl=60, inputs={"x": {"type": "static", "value": 1}})])
    cache: dict[str, Any] = {}
    clock = FakeClock()
    first = run(flow, step=counting(calls), cache=cache, clock=clock)
    again = run(flow, step=counting(calls), cache=cache, clock=clock)
    assert (first.status.result, again.status.result, calls) == ("1#1", "1#1", ["a"])
    clock.sleep(61)
    expired = run(flow, step=counting(calls), cache=cache, clock=clock)
    assert (expired.status.result, calls) == ("1#2", ["a", "a"])


def test_step_cache_key_is_the_arguments() -> None:
    calls: list[str] = []
    flow = make_flow(
        [script("a", cache_ttl=60, inputs={"x": {"type": "javascript", "expr": "flow_input.n"}})]
    )
    cache: dict[str, Any] = {}
    results = [run(flow, {"n": n}, step=counting(calls), cache=cache).status.result for n in (1, 2, 1)]
    assert results == ["1#1", "2#2", "1#1"]


def test_flow_cache_ttl_returns_the_cached_flow_result_without_running_a_step() -> None:
    calls: list[str] = []
    flow = make_flow(
        [script("a", inputs={"x": {"type": "javascript", "expr": "flow_input.n"}})], cache_ttl=30
    )
    cache: dict[str, Any] = {}
    first = run(flow, {"n": 5}, step=counting(calls), cache=cache)
    again = run(flow, {"n": 5}, step=counting(calls), cache=cache)
    other = run(flow, {"n": 6}, step=counting(calls), cache=cache)
    assert (first.status.result, again.status.result, again.status.cached, other.status.result) == (
        "5#1",
        "5#1",
        True,
        "6#2",
    )
    assert calls == ["a", "a"]


def test_a_failed_step_is_not_cached() -> None:
    flow = make_flow([script("a", path="f/x/fail", cache_ttl=60)])
    cache: dict[str, Any] = {}
    assert run(flow, cache=cache).status.phase == "Failed"
    assert cache == {}


def test_early_return_is_delivered_while_the_flow_goes_on() -> None:
    got: list[Any] = []
    flow = make_flow(
        [script("a", inputs={"x": {"type": "static", "value": "early"}}), script("b")], early_return="a"
    )
    done = run(flow, step=counting(calls := []), on_early_return=got.append)
    assert got == ["early#1"] and done.status.result == "early#1#2" and calls == ["a", "b"]


def test_a_sequential_loop_takes_the_result_its_first_iteration_cached() -> None:
    calls: list[str] = []
    inner = script("draw", cache_ttl=60, inputs={"x": {"type": "static", "value": "same"}})
    loop = {
        "id": "loop",
        "value": {
            "type": "forloopflow",
            "iterator": {"type": "static", "value": [1, 2, 3]},
            "modules": [inner],
        },
    }
    done = run(make_flow([loop]), step=counting(calls))
    assert done.status.result == ["same#1"] * 3 and calls == ["loop/0/draw"]
