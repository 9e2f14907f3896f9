"""Retrying a failed FlowRun from its failed step (`kubemill retry RUN`): which step records of the failed run
a new run may start with (pure).

The new run runs the same Flow document (same hash) with the same args, so a step that succeeded in the
failed run would compute the same thing again; its record is reused, and the engine, which replays a run from
its records, goes on from the first step that is not reused. Reused: the top-level steps before the first
one that did not succeed, as long as each is over (`Succeeded` or skipped), holds its result inline (a `$ref`
points at a child run of the old run, which retention may delete) and is no approval (an approval is a
person's decision about one run: the retry asks again). Everything from the first step not reused runs again.
"""

from __future__ import annotations

import json

from kubemill.engine.state import REF_KEY
from kubemill.models.flows import FlowRun, FlowRunStatus, StepRecord
from kubemill.models.openflow import Approval, OpenFlow


def reusable_steps(flow: OpenFlow, failed: FlowRunStatus) -> dict[str, StepRecord]:
    """The records a retry of `failed` starts with (top-level step ids); empty when none can be reused."""
    reused: dict[str, StepRecord] = {}
    for module in flow.value.modules:
        record = failed.steps.get(module.id)
        if record is None or record.phase not in ("Succeeded", "Skipped") or record.stopped:
            break
        if module.suspend is not None or isinstance(module.value, Approval):
            break
        if f'"{REF_KEY}"' in json.dumps(record.model_dump(mode="json", by_alias=True)):
            break
        reused[module.id] = record
    return reused


def problem_with(old: FlowRun, new: FlowRun, digest: str) -> str | None:
    """Why the failed run `old` cannot seed `new`, which runs the document hashed `digest` (None: it can)."""
    status = old.status or FlowRunStatus()
    if status.phase != "Failed":
        return f"it is {status.phase}, not Failed"
    if old.spec.flow_path != new.spec.flow_path or dict(old.spec.args) != dict(new.spec.args):
        return "it ran another flow or other args"
    if status.flow is None or status.flow.hash != digest:
        return "it ran another version of the flow"
    return None
