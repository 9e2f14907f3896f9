"""Approval steps: who may decide, when enough people approved, what a rejection or a timeout means.

Two spellings reach here: Windmill's `suspend` on any step (waits after the step ran) and the brief's
`type: approval` step (`approvers`, `timeout`). Both become a `PendingApproval`. Decisions arrive as
`ApprovalEvent`s whose requester the admission webhook already verified; this module checks them again
against the listed approvers (a user name or `group:<name>`), ignores repeats, and appends each counted
decision to the run's ledger. `required_events` approvals from distinct people resume the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import JsonValue

from kubemill.engine.actions import ApprovalEvent
from kubemill.engine.state import ApprovalRecord, PendingApproval, RunError
from kubemill.models.openflow import Approval, FlowModule


def pending_approval(module: FlowModule, path: str, now: datetime) -> PendingApproval | None:
    """The approval `module` waits for once it has run, or None when it has none."""
    value = module.value
    if isinstance(value, Approval):
        deadline = now + timedelta(seconds=value.timeout) if value.timeout else None
        return PendingApproval(
            step=path,
            approvers=value.approvers,
            required_events=value.required_events,
            deadline=deadline,
            continue_on_timeout=value.continue_on_disapprove_timeout,
            self_approval_disabled=value.self_approval_disabled,
            form=value.resume_form.schema_ if value.resume_form else None,
        )
    suspend = module.suspend
    if suspend is None or not (suspend.required_events or suspend.timeout or suspend.resume_form):
        return None
    return PendingApproval(
        step=path,
        required_events=suspend.required_events or 1,
        deadline=now + timedelta(seconds=suspend.timeout) if suspend.timeout else None,
        continue_on_timeout=bool(suspend.continue_on_disapprove_timeout),
        self_approval_disabled=bool(suspend.self_approval_disabled),
        form=suspend.resume_form.schema_ if suspend.resume_form else None,
    )


def may_decide(pending: PendingApproval, event: ApprovalEvent, requester: str | None) -> bool:
    """Whether `event`'s (verified) user may approve or reject this step."""
    if pending.self_approval_disabled and requester is not None and event.user == requester:
        return False
    if not pending.approvers:
        return True
    return event.user in pending.approvers or any(f"group:{g}" in pending.approvers for g in event.groups)


@dataclass(frozen=True)
class Verdict:
    """Where an approval stands after this cycle's events."""

    ledger: tuple[ApprovalRecord, ...]
    approved: bool = False
    error: RunError | None = None
    resume: JsonValue = None
    approvers: tuple[str, ...] = ()
    payloads: tuple[JsonValue, ...] = ()
    """The resume payloads of the approvals folded in this cycle, in order."""


def _matches(event: ApprovalEvent, pending: PendingApproval, step_id: str) -> bool:
    return event.step in (pending.step, step_id)


def decide(
    pending: PendingApproval,
    step_id: str,
    events: tuple[ApprovalEvent, ...],
    ledger: tuple[ApprovalRecord, ...],
    requester: str | None,
    now: datetime,
) -> Verdict:
    """Fold this cycle's events into the ledger and say whether the step resumes, fails or keeps waiting."""
    resume: JsonValue = None
    payloads: list[JsonValue] = []
    for event in events:
        if not _matches(event, pending, step_id) or not may_decide(pending, event, requester):
            continue
        record = ApprovalRecord(
            step=pending.step,
            user=event.user,
            groups=event.groups,
            decision=event.decision,
            at=event.at,
            comment=event.comment,
        )
        if record in ledger:
            continue
        ledger = (*ledger, record)
        if event.decision == "approve":
            resume = event.payload
            payloads.append(event.payload)
    mine = [r for r in ledger if r.step == pending.step]
    rejection = next((r for r in mine if r.decision == "reject"), None)
    if rejection is not None:
        reason = f": {rejection.comment}" if rejection.comment else ""
        message = f"step {step_id} was rejected by {rejection.user}{reason}"
        return Verdict(ledger, error=RunError(name="ApprovalRejected", message=message, step=pending.step))
    approvers = tuple(dict.fromkeys(r.user for r in mine if r.decision == "approve"))
    if len(approvers) >= pending.required_events:
        return Verdict(ledger, approved=True, resume=resume, approvers=approvers, payloads=tuple(payloads))
    if pending.deadline is not None and now >= pending.deadline:
        if pending.continue_on_timeout:
            return Verdict(ledger, approved=True, approvers=approvers)
        count = f"{len(approvers)} of {pending.required_events} approvals"
        message = f"step {step_id} was not approved before its timeout ({count})"
        return Verdict(ledger, error=RunError(name="ApprovalTimeout", message=message, step=pending.step))
    return Verdict(ledger, payloads=tuple(payloads))
