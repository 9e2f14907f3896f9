"""Stored run logs (kubemill.k8s.runlogs) and the cluster CLI's pure parts (kubemill.ctl): no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubemill.ctl import parse_args, retry_manifest
from kubemill.ctl.common import CtlError
from kubemill.ctl.views import runs_table, step_tree
from kubemill.k8s import runlogs
from kubemill.k8s.builders import RunIdentity

RUN = RunIdentity("ns", "order-1", "uid-1")


def test_an_attempt_is_masked_and_loses_the_envelope_line() -> None:
    text = runlogs.run_log_text(
        2, 'hello\nthe key is hunter22\n\nKUBEMILL_RESULT:{"result":1}\n', {"hunter22"}
    )
    assert text == "--- attempt 2 ---\nhello\nthe key is ***\n"


def test_bound_keeps_the_tail_from_a_line_start_and_counts_every_cut() -> None:
    text = "".join(f"line {i:04d}\n" for i in range(1000))  # 10 bytes a line
    kept, cut = runlogs.bound(text, 105)
    assert kept.startswith("line 0990\n") and kept.endswith("line 0999\n")
    assert cut == len(text) - len(kept)
    again, total = runlogs.bound(kept + "line 1000\n", 105, cut)
    assert again.startswith("line 0991\n") and total == cut + 10
    assert runlogs.bound("short\n", 105) == ("short\n", 0)


def test_the_configmap_round_trips_compressed_with_the_cut_said() -> None:
    cm = runlogs.build_log_configmap(RUN, "tail\n", 1234, final=True)
    assert cm["metadata"]["name"] == runlogs.log_configmap_name("order-1")
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert "data" not in cm and list(cm["binaryData"]) == ["log.gz"]
    stored = runlogs.read_log_configmap(cm)
    assert stored.final and stored.cut_bytes == 1234
    assert stored.text.startswith("[kubemill: 1234 earlier bytes of output were cut")
    assert runlogs.strip_notice(stored.text) == "tail\n"


def test_args_from_json_and_pairs() -> None:
    assert parse_args(["n=3", "name=ada", "flag=true", "raw={x"], '{"n": 1, "z": [1]}') == {
        "n": 3,
        "z": [1],
        "name": "ada",
        "flag": True,
        "raw": "{x",
    }
    with pytest.raises(CtlError, match="KEY=VALUE"):
        parse_args(["novalue"], None)
    with pytest.raises(CtlError, match="JSON object"):
        parse_args([], "[1]")


NOW = datetime(2026, 12, 2, 12, 0, 30, tzinfo=UTC)


def test_the_step_tree_nests_loop_iterations_under_their_step() -> None:
    run = {
        "kind": "FlowRun",
        "metadata": {"name": "fr"},
        "spec": {"flowPath": "f/x/y"},
        "status": {
            "phase": "Failed",
            "startedAt": "2026-12-02T12:00:00Z",
            "finishedAt": "2026-12-02T12:00:20Z",
            "steps": {
                "a": {
                    "phase": "Succeeded",
                    "result": [1, 2],
                    "run": "fr-a",
                    "startedAt": "2026-12-02T12:00:01Z",
                },
                "loop": {"phase": "Failed", "count": 2, "startedAt": "2026-12-02T12:00:02Z"},
                "loop/0/b": {"phase": "Succeeded", "result": 1, "startedAt": "2026-12-02T12:00:03Z"},
                "loop/1/b": {
                    "phase": "Failed",
                    "error": {"name": "ValueError", "message": "no"},
                    "startedAt": "2026-12-02T12:00:04Z",
                },
            },
            "error": {"name": "ValueError", "message": "no", "step": "loop"},
        },
    }
    assert step_tree(run, NOW).splitlines() == [
        "FlowRun fr  f/x/y  Failed  20s",
        "├─ a  Succeeded  29s  → [1,2]  (fr-a)",
        "└─ loop  Failed  28s",
        "   ├─ 0/b  Succeeded  27s  → 1",
        "   └─ 1/b  Failed  26s  ValueError: no",
        "error at step loop: ValueError: no",
    ]


def test_runs_table_and_retry_manifest() -> None:
    run = {
        "kind": "ScriptRun",
        "metadata": {"name": "job-retry-abcde", "namespace": "ns"},
        "spec": {"scriptPath": "f/a/b", "args": {"x": 1}, "stepId": "s"},
        "status": {
            "phase": "Failed",
            "startedAt": "2026-12-02T11:58:00Z",
            "finishedAt": "2026-12-02T12:00:00Z",
        },
    }
    table = runs_table([run], NOW).splitlines()
    assert table[0].split() == ["NAME", "KIND", "TARGET", "PHASE", "STARTED", "DURATION"]
    assert table[1].split() == [
        "job-retry-abcde",
        "ScriptRun",
        "f/a/b",
        "Failed",
        "2026-12-02T11:58:00Z",
        "2m00s",
    ]
    again = retry_manifest(run)
    assert again["metadata"]["generateName"] == "job-retry-"
    assert again["metadata"]["annotations"] == {"kubemill.dev/retry-of": "job-retry-abcde"}
    assert again["spec"] == {"scriptPath": "f/a/b", "args": {"x": 1}}


def test_a_retry_reuses_the_steps_before_the_failed_one_but_no_approval_and_no_reference() -> None:
    from kubemill.engine.restart import reusable_steps
    from kubemill.models.flows import FlowRunStatus
    from kubemill.models.openflow import OpenFlow

    def flow(*kinds: str) -> OpenFlow:
        modules = []
        for i, kind in enumerate(kinds):
            value: dict[str, Any] = {"type": "identity"}
            if kind == "approval":
                value = {"type": "approval", "approvers": ["alice@example.com"], "timeout": 60}
            modules.append({"id": f"s{i}", "value": value})
        return OpenFlow.model_validate({"summary": "", "value": {"modules": modules}})

    def status(*records: dict[str, Any]) -> FlowRunStatus:
        return FlowRunStatus.model_validate(
            {"phase": "Failed", "steps": {f"s{i}": r for i, r in enumerate(records)}}
        )

    ok, failed = {"phase": "Succeeded", "result": 1}, {"phase": "Failed"}
    assert list(reusable_steps(flow("x", "x", "x"), status(ok, ok, failed))) == ["s0", "s1"]
    assert list(reusable_steps(flow("x", "approval", "x"), status(ok, ok, failed))) == ["s0"]
    by_ref = {"phase": "Succeeded", "result": {"$ref": "old-child"}}
    assert list(reusable_steps(flow("x", "x", "x"), status(ok, by_ref, failed))) == ["s0"]
    assert reusable_steps(flow("x", "x"), status(failed, ok)) == {}
