"""Which finished runs retention deletes (kubemill.k8s.retention): TTLs per outcome, count limits per kind,
steps of flows left to their FlowRun, bad annotations refused by name."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubemill.k8s.retention import Policy, expired, policy_for

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def run(kind: str, name: str, phase: str, finished: str | None, **spec: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if finished:
        status["finishedAt"] = f"2026-12-02T{finished}Z"
    return {"kind": kind, "metadata": {"name": name}, "spec": spec, "status": status}


RUNS = [
    run("ScriptRun", "ok-old", "Succeeded", "11:00:00"),
    run("ScriptRun", "ok-new", "Succeeded", "11:59:00"),
    run("ScriptRun", "bad-old", "Failed", "11:00:00"),
    run("ScriptRun", "gone", "Cancelled", "11:30:00"),
    run("ScriptRun", "running", "Running", None),
    run("ScriptRun", "step", "Succeeded", "10:00:00", flowRun="fr"),
    run("FlowRun", "fr", "Succeeded", "10:00:00"),
]


def test_ttls_by_outcome_and_steps_left_to_their_flow_run() -> None:
    assert expired(RUNS, Policy(after_success=600), NOW) == [("FlowRun", "fr"), ("ScriptRun", "ok-old")]
    assert expired(RUNS, Policy(after_failure=1800), NOW) == [("ScriptRun", "bad-old"), ("ScriptRun", "gone")]
    assert expired(RUNS, Policy(), NOW) == []


def test_count_limits_keep_the_newest_per_kind() -> None:
    assert expired(RUNS, Policy(max_finished=2), NOW) == [("ScriptRun", "bad-old"), ("ScriptRun", "ok-old")]
    both = expired(RUNS, Policy(after_success=600, max_finished=1), NOW)
    assert both == [
        ("FlowRun", "fr"),
        ("ScriptRun", "bad-old"),
        ("ScriptRun", "ok-old"),
        ("ScriptRun", "gone"),
    ]


def test_namespace_annotations_override_defaults_and_bad_ones_are_named() -> None:
    defaults = Policy(after_success=100, after_failure=200, max_finished=5)
    policy = policy_for(
        {
            "kubemill.dev/ttl-seconds-after-success": "30",
            "kubemill.dev/max-finished-runs": "",
            "kubemill.dev/ttl-seconds-after-failure": "1h",
        },
        defaults,
    )
    assert (policy.after_success, policy.after_failure, policy.max_finished) == (30, 200, 0)
    assert policy.problems == (
        "annotation kubemill.dev/ttl-seconds-after-failure='1h' is not a whole number of seconds or runs; "
        "ignored",
    )
    assert policy_for(None, defaults) == defaults
