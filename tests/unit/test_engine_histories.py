"""Stored run histories replayed through advance(): an engine change must not change runs in flight.

Each file under tests/fixtures/histories/*.history.json holds a flow, the sequence of (observations, now)
one run saw, and the status it ended with. Replaying the observations from an empty status must end in the
same status, field for field. To record the histories again (only when a change of behaviour is
intended, and say so in the commit):

    .venv/bin/python tests/unit/test_engine_histories.py --record [SCENARIO ...]
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubemill.engine import ApprovalEvent, AwaitApproval, CreateRun, FlowRunStatus, Observations, advance
from kubemill.local.driver import FakeClock, drive
from kubemill.models.openflow import OpenFlow

HISTORIES = Path(__file__).parent.parent / "fixtures" / "histories"


def _order_scripts(action: CreateRun) -> Any:
    path = action.script_path or ""
    if path.endswith("validate_order"):
        return {"order_id": "o-7", **action.args["order"]}
    if path.endswith("process_payment"):
        return {"charged": action.args["amount"]}
    if path.endswith("create_shipment"):
        return {"tracking_number": "T-7"}
    return {"ok": True, "args": action.args}


def _approve(action: AwaitApproval, now: datetime) -> list[ApprovalEvent]:
    return [
        ApprovalEvent(
            step=action.step,
            user="manager@example.com",
            groups=("managers",),
            decision="approve",
            payload={"reason": "known customer"},
            comment="fine",
            at=now,
        )
    ]


def _reject_after_an_outsider(action: AwaitApproval, now: datetime) -> list[ApprovalEvent]:
    """mallory is not a listed approver (ignored, not in the ledger); the manager rejects."""
    return [
        ApprovalEvent(step=action.step, user="mallory@example.com", decision="approve", at=now),
        ApprovalEvent(
            step=action.step,
            user="manager@example.com",
            groups=("managers",),
            decision="reject",
            comment="too expensive",
            at=now,
        ),
    ]


def _nobody(action: AwaitApproval, now: datetime) -> list[ApprovalEvent]:
    return []


def _flaky(action: CreateRun) -> Any:
    if action.attempt < 1 and action.step.endswith("charge"):
        raise RuntimeError("card network busy")
    return {"step": action.step, "args": action.args}


LOOP_FLOW = {
    "summary": "loop with retries, branches and a sleep",
    "value": {
        "modules": [
            {
                "id": "each",
                "value": {
                    "type": "forloopflow",
                    "parallel": True,
                    "parallelism": 2,
                    "iterator": {"type": "javascript", "expr": "flow_input.items"},
                    "modules": [
                        {
                            "id": "charge",
                            "value": {
                                "type": "script",
                                "path": "f/x/charge",
                                "input_transforms": {
                                    "item": {"type": "javascript", "expr": "flow_input.iter.value"}
                                },
                            },
                            "retry": {
                                "exponential": {
                                    "attempts": 2,
                                    "multiplier": 1,
                                    "seconds": 2,
                                    "random_factor": 30,
                                }
                            },
                        },
                        {
                            "id": "fan",
                            "value": {
                                "type": "branchall",
                                "branches": [
                                    {"modules": [{"id": "mail", "value": {"type": "identity"}}]},
                                    {
                                        "modules": [
                                            {
                                                "id": "audit",
                                                "value": {
                                                    "type": "script",
                                                    "path": "f/x/audit",
                                                    "input_transforms": {
                                                        "i": {
                                                            "type": "javascript",
                                                            "expr": "flow_input.iter.index",
                                                        }
                                                    },
                                                },
                                            }
                                        ]
                                    },
                                ],
                            },
                        },
                    ],
                },
            },
            {"id": "pause", "value": {"type": "identity"}, "sleep": 15},
            {
                "id": "report",
                "value": {
                    "type": "script",
                    "path": "f/x/report",
                    "input_transforms": {"n": {"type": "javascript", "expr": "results.each.length"}},
                },
            },
        ]
    },
}

LARGE_ORDER = {
    "order": {
        "customer_email": "c@example.com",
        "total": 12000,
        "items": [{"sku": "b"}],
        "shipping_address": {"city": "Oslo"},
    }
}

SCENARIOS: dict[str, tuple[Any, dict[str, Any], Any, Any]] = {
    "order_small": (
        "order_processing.flow.yaml",
        {
            "order": {
                "customer_email": "c@example.com",
                "total": 40,
                "items": [{"sku": "a"}],
                "shipping_address": {"city": "Lyon"},
            }
        },
        _order_scripts,
        None,
    ),
    "order_large_approved": (
        "order_processing.flow.yaml",
        {
            "order": {
                "customer_email": "c@example.com",
                "total": 12000,
                "items": [{"sku": "b"}],
                "shipping_address": {"city": "Oslo"},
            }
        },
        _order_scripts,
        _approve,
    ),
    "loop_retry_sleep": (LOOP_FLOW, {"items": ["a", "b", "c"]}, _flaky, None),
    "order_large_rejected": (
        "order_processing.flow.yaml",
        LARGE_ORDER,
        _order_scripts,
        _reject_after_an_outsider,
    ),
    "order_large_timeout": ("order_processing.flow.yaml", LARGE_ORDER, _order_scripts, _nobody),
}


def _flow(source: Any) -> OpenFlow:
    if isinstance(source, str):
        return OpenFlow.model_validate(yaml.safe_load((HISTORIES / source).read_text()))
    return OpenFlow.model_validate(source)


def record(only: set[str] | None = None) -> None:
    for name, (source, args, run_step, approve) in SCENARIOS.items():
        if only and name not in only:
            continue
        run = drive(_flow(source), args, run_step, clock=FakeClock(), approve=approve, run_name=f"h-{name}")
        document = {
            "flow": source,
            "cycles": [
                {
                    "now": c.now.isoformat(),
                    "observations": c.observations.model_dump(mode="json", exclude_defaults=True),
                }
                for c in run.history
            ],
            "final_status": json.loads(run.status.to_json()),
        }
        (HISTORIES / f"{name}.history.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def _histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.history.json"))


def test_every_scenario_has_a_stored_history() -> None:
    assert {p.name.removesuffix(".history.json") for p in _histories()} == set(SCENARIOS)


@pytest.mark.parametrize("path", _histories(), ids=lambda p: p.name)
def test_replaying_a_history_gives_the_stored_status(path: Path) -> None:
    document = json.loads(path.read_text())
    flow = _flow(document["flow"])
    status = FlowRunStatus()
    for cycle in document["cycles"]:
        observations = Observations.model_validate(cycle["observations"])
        status = advance(flow, status, observations, datetime.fromisoformat(cycle["now"])).status
    assert json.loads(status.to_json()) == document["final_status"]
    assert FlowRunStatus.model_validate(document["final_status"]) == status


if __name__ == "__main__":
    if sys.argv[1:2] == ["--record"]:
        record(set(sys.argv[2:]) or None)  # optionally only the named scenarios
