"""Table-driven tests of single advance() calls: (flow, status, observations) -> decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubemill.engine import (
    ApprovalEvent,
    AwaitApproval,
    ChildObservation,
    CreateRun,
    DeleteRun,
    Finish,
    FlowRunStatus,
    Observations,
    RequeueAfter,
    advance,
    child_run_name,
)
from kubemill.engine.retry import retry_delay
from kubemill.models.openflow import OpenFlow
from kubemill.models.openflow_parts import Retry

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def make_flow(modules: list[dict[str, Any]], **value: Any) -> OpenFlow:
    return OpenFlow.model_validate({"value": {"modules": modules, **value}})


def step(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "value": {"type": "script", "path": "f/x/s", "input_transforms": {}}, **extra}


def creates(decision: Any) -> list[CreateRun]:
    return [a for a in decision.actions if isinstance(a, CreateRun)]


def test_parallel_forloop_never_has_more_children_in_flight_than_parallelism() -> None:
    flow = make_flow(
        [
            {
                "id": "l",
                "value": {
                    "type": "forloopflow",
                    "parallel": True,
                    "parallelism": 3,
                    "iterator": {"type": "static", "value": list(range(10))},
                    "modules": [step("s")],
                },
            }
        ]
    )
    status, children, in_flight_max, now = FlowRunStatus(), {}, 0, NOW
    for _ in range(50):
        decision = advance(flow, status, Observations(run_name="r", children=children), now)
        status = decision.status
        for action in creates(decision):
            children[action.name] = ChildObservation(phase="Running")
        running = [n for n, c in children.items() if c.phase == "Running"]
        in_flight_max = max(in_flight_max, len(running))
        assert len(running) <= 3
        if any(isinstance(a, Finish) for a in decision.actions):
            break
        children[running[0]] = ChildObservation(phase="Succeeded", result=len(children))
        now += timedelta(seconds=1)
    assert status.phase == "Succeeded" and in_flight_max == 3 and len(status.result) == 10


def test_first_advance_validates_and_creates_the_first_child() -> None:
    decision = advance(
        make_flow([step("a"), step("b")]), FlowRunStatus(), Observations(run_name="run-1"), NOW
    )
    assert decision.status.phase == "Running" and decision.status.started_at == NOW
    assert [(a.name, a.step, a.script_path) for a in creates(decision)] == [
        (child_run_name("run-1", "a", 0), "a", "f/x/s")
    ]


def test_advance_is_pure_same_inputs_same_decision() -> None:
    flow = make_flow([step("a", retry={"exponential": {"attempts": 3, "seconds": 2, "random_factor": 50}})])
    first = advance(flow, FlowRunStatus(), Observations(run_name="r"), NOW)
    name = creates(first)[0].name
    failed = Observations(run_name="r", children={name: ChildObservation(phase="Failed")})
    assert advance(flow, first.status, failed, NOW) == advance(flow, first.status, failed, NOW)


def test_recreates_a_recorded_child_that_the_operator_does_not_see() -> None:
    flow = make_flow([step("a")])
    first = advance(flow, FlowRunStatus(), Observations(run_name="r"), NOW)
    again = advance(flow, first.status, Observations(run_name="r"), NOW)
    assert creates(again) == creates(first)


def test_cancel_deletes_children_in_flight_and_finishes_cancelled() -> None:
    flow = make_flow([step("a")])
    first = advance(flow, FlowRunStatus(), Observations(run_name="r"), NOW)
    name = creates(first)[0].name
    obs = Observations(
        run_name="r", children={name: ChildObservation(phase="Running")}, cancel_requested=True
    )
    decision = advance(flow, first.status, obs, NOW)
    assert DeleteRun(kind="ScriptRun", name=name, reason="the flow run was cancelled") in decision.actions
    assert decision.status.phase == "Cancelled" and isinstance(decision.actions[-1], Finish)


def test_concurrency_limit_keeps_the_run_pending() -> None:
    decision = advance(
        make_flow([step("a")], concurrent_limit=1),
        FlowRunStatus(),
        Observations(run_name="r", may_start=False),
        NOW,
    )
    assert decision.status.phase == "Pending" and isinstance(decision.actions[0], RequeueAfter)


def test_a_finished_run_is_left_alone() -> None:
    done = FlowRunStatus(phase="Succeeded", result=1)
    assert advance(make_flow([step("a")]), done, Observations(run_name="r"), NOW).actions == ()


@pytest.mark.parametrize(
    ("approvers", "user", "groups", "counted"),
    [
        (["alice@example.com"], "alice@example.com", (), True),
        (["group:managers"], "alice@example.com", ("managers",), True),
        (["group:managers"], "bob@example.com", ("devs",), False),
        (["alice@example.com"], "mallory@example.com", (), False),
    ],
)
def test_only_listed_approvers_count(
    approvers: list[str], user: str, groups: tuple[str, ...], counted: bool
) -> None:
    flow = make_flow(
        [{"id": "ok", "value": {"type": "approval", "approvers": approvers, "timeout": 60}}, step("b")]
    )
    first = advance(flow, FlowRunStatus(), Observations(run_name="r"), NOW)
    assert first.status.phase == "Suspended" and first.status.pending_approvals[0].approvers == tuple(
        approvers
    )
    assert (
        AwaitApproval(
            step="ok", approvers=tuple(approvers), required_events=1, deadline=NOW + timedelta(seconds=60)
        )
        in first.actions
    )
    event = ApprovalEvent(step="ok", user=user, groups=groups, decision="approve", at=NOW)
    second = advance(flow, first.status, Observations(run_name="r", approvals=(event,)), NOW)
    assert bool(creates(second)) is counted
    assert len(second.status.approvals) == (1 if counted else 0)


def test_required_events_need_distinct_people_and_resume_reaches_the_next_step() -> None:
    flow = make_flow(
        [
            {"id": "a", "value": {"type": "identity"}, "suspend": {"required_events": 2, "timeout": 600}},
            {
                "id": "b",
                "value": {
                    "type": "script",
                    "path": "f/x/s",
                    "input_transforms": {
                        "r": {"type": "javascript", "expr": "resume"},
                        "who": {"type": "javascript", "expr": "approvers"},
                    },
                },
            },
        ]
    )
    status = advance(flow, FlowRunStatus(), Observations(run_name="r"), NOW).status
    one = ApprovalEvent(step="a", user="u1", decision="approve", at=NOW, payload={"note": 1})
    status = advance(flow, status, Observations(run_name="r", approvals=(one, one)), NOW).status
    assert status.phase == "Suspended" and len(status.approvals) == 1
    two = ApprovalEvent(step="a", user="u2", decision="approve", at=NOW, payload={"note": 2})
    decision = advance(flow, status, Observations(run_name="r", approvals=(two,)), NOW)
    assert dict(creates(decision)[0].args) == {"r": {"note": 2}, "who": ["u1", "u2"]}


def test_self_approval_disabled_ignores_the_requester() -> None:
    flow = make_flow(
        [{"id": "a", "value": {"type": "approval", "approvers": ["u1"], "self_approval_disabled": True}}]
    )
    status = advance(flow, FlowRunStatus(), Observations(run_name="r", requester="u1"), NOW).status
    event = ApprovalEvent(step="a", user="u1", decision="approve", at=NOW)
    after = advance(flow, status, Observations(run_name="r", requester="u1", approvals=(event,)), NOW)
    assert after.status.phase == "Suspended"


def test_continue_on_disapprove_timeout_goes_on() -> None:
    flow = make_flow(
        [
            {
                "id": "a",
                "value": {"type": "identity"},
                "suspend": {"timeout": 10, "continue_on_disapprove_timeout": True},
            }
        ]
    )
    status = advance(flow, FlowRunStatus(), Observations(run_name="r"), NOW).status
    later = advance(flow, status, Observations(run_name="r"), NOW + timedelta(seconds=10))
    assert later.status.phase == "Succeeded"


def test_retry_delays_follow_windmill_with_bounded_deterministic_jitter() -> None:
    policy = Retry.model_validate(
        {
            "constant": {"attempts": 2, "seconds": 4},
            "exponential": {"attempts": 3, "multiplier": 2, "seconds": 3, "random_factor": 20},
        }
    )
    delays = [retry_delay(policy, n, "run", "step") for n in range(6)]
    assert delays[:2] == [4.0, 4.0] and delays[5] is None
    for n, expected in ((2, 6.0), (3, 18.0), (4, 54.0)):
        assert delays[n] is not None and expected * 0.8 <= delays[n] <= expected * 1.2
    assert delays == [retry_delay(policy, n, "run", "step") for n in range(6)]
    assert retry_delay(policy, 2, "run", "other-step") != delays[2]


def test_child_names_are_dns_labels_and_distinct_per_attempt() -> None:
    names = {
        child_run_name("a-very-long-flow-run-name-" * 3, f"loop/{i}/step_{i}", attempt)
        for i in range(50)
        for attempt in range(3)
    }
    assert len(names) == 150
    import re

    assert all(len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names)


def test_thousand_iteration_loop_keeps_status_under_256_kib() -> None:
    body = [
        {
            "id": "fetch",
            "value": {
                "type": "script",
                "path": "f/x/s",
                "input_transforms": {"i": {"type": "javascript", "expr": "flow_input.iter.index"}},
            },
        },
        {
            "id": "store",
            "value": {
                "type": "script",
                "path": "f/x/s",
                "input_transforms": {"row": {"type": "javascript", "expr": "results.fetch"}},
            },
        },
    ]
    flow = make_flow(
        [
            {
                "id": "each",
                "value": {
                    "type": "forloopflow",
                    "modules": body,
                    "iterator": {"type": "javascript", "expr": "flow_input.ids"},
                },
            }
        ]
    )
    children: dict[str, ChildObservation] = {}
    status, largest, cycles = FlowRunStatus(), 0, 0
    while status.phase not in ("Succeeded", "Failed"):
        cycles += 1
        decision = advance(
            flow, status, Observations(run_name="r", args={"ids": list(range(1000))}, children=children), NOW
        )
        status = decision.status
        largest = max(largest, status.size_bytes() if not status.done else 0)
        for action in creates(decision):
            index = action.args["i"] if "i" in action.args else action.args["row"]["index"]
            big = {"index": index, "payload": "x" * 2000}  # stored by reference
            small = {"stored": index}  # stored inline
            result = big if "i" in action.args or index % 2 else small
            children[action.name] = ChildObservation(phase="Succeeded", result=result)
    assert status.phase == "Succeeded" and cycles == 2001
    assert status.result[998] == {"stored": 998} and status.result[999]["payload"] == "x" * 2000
    engine_part = status.model_copy(update={"result": None})
    assert largest < 256 * 1024 and engine_part.size_bytes() < 256 * 1024, (largest, engine_part.size_bytes())


def test_current_step_is_the_innermost_busy_step_whatever_the_order_of_the_stored_records() -> None:
    flow = make_flow(
        [
            step("validate"),
            {
                "id": "route",
                "value": {
                    "type": "branchone",
                    "branches": [
                        {
                            "expr": "true",
                            "modules": [{"id": "approve", "value": {"type": "approval", "approvers": ["a"]}}],
                        }
                    ],
                },
            },
        ]
    )
    name = child_run_name("r", "validate", 0)
    first = advance(flow, FlowRunStatus(), Observations(run_name="r"), NOW)
    assert first.status.current_step == "validate"
    done = {name: ChildObservation(phase="Succeeded", result=1)}
    waiting = advance(flow, first.status, Observations(run_name="r", children=done), NOW)
    assert waiting.status.phase == "Suspended" and waiting.status.current_step == "approve"
    # the API server hands the steps map back with sorted keys, not in the order they were written
    resorted = waiting.status.model_copy(update={"steps": dict(sorted(waiting.status.steps.items()))})
    again = advance(flow, resorted, Observations(run_name="r", children=done), NOW)
    assert list(resorted.steps) != list(waiting.status.steps)
    assert again.status.current_step == "approve"
