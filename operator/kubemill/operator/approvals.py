"""Approvals with verified identity: the admission webhook, the signed decision annotations, resume URLs.

Kubernetes does not record who set an annotation, so `kubectl annotate flowrun/X kubemill.dev/approve=<step>`
(or `kubemill.dev/reject=<step>`, with optional `kubemill.dev/comment` and `kubemill.dev/payload`) passes
through a mutating admission webhook served by the operator (Kopf's `on.mutate`, with the requester's
`userinfo`). It rejects anyone who is not a listed approver of a step that is waiting, with a message that
says who may, and otherwise replaces the request annotations by one decision annotation
`approval.kubemill.dev/<hash of step and user>` holding the verified user, groups, decision, time, comment and
payload, HMAC-signed with the operator's key (a Secret) over the run's uid. The FlowRun handler trusts only
decisions whose signature checks, so a decision cannot be forged or copied to another run; a validating
webhook (`on.validate`) refuses requests that add, change or remove decision annotations other than the
requester's own, just signed. Webhook configurations use `matchConditions`, so only requests that touch
approval annotations reach the operator. The same key signs resume URLs (`resume_urls.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import kopf

from kubemill.engine import ApprovalEvent, PendingApproval
from kubemill.engine.approvals import may_decide
from kubemill.models.common import API_VERSION
from kubemill.operator import admission
from kubemill.operator.signing import signing_key

GROUP, VERSION = API_VERSION.split("/")
APPROVE = "kubemill.dev/approve"
REJECT = "kubemill.dev/reject"
COMMENT = "kubemill.dev/comment"
PAYLOAD = "kubemill.dev/payload"
REQUEST_ANNOTATIONS = (APPROVE, REJECT, COMMENT, PAYLOAD)
DECISION_PREFIX = "approval.kubemill.dev/"
MAX_PAYLOAD = 16 * 1024


# --- signed decisions (pure, given the key) ----------------------------------------------------------------


def decision_key(step: str, user: str) -> str:
    """One annotation per (step, person): a second approval by the same person replaces the first."""
    return DECISION_PREFIX + hashlib.sha256(f"{step}\x00{user}".encode()).hexdigest()[:16]


def _signature(key: bytes, uid: str, decision: dict[str, Any]) -> str:
    fields = {k: v for k, v in decision.items() if k != "sig"}
    message = json.dumps({"uid": uid, **fields}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign_decision(key: bytes, uid: str, decision: dict[str, Any]) -> str:
    """The annotation value: the decision with its signature."""
    return json.dumps({**decision, "sig": _signature(key, uid, decision)}, separators=(",", ":"))


def read_decision(key: bytes, uid: str, value: str) -> dict[str, Any] | None:
    """The decision an annotation holds, or None when it is not one this operator signed for this run."""
    try:
        decision = json.loads(value)
    except ValueError:
        return None
    if not isinstance(decision, dict) or not isinstance(decision.get("sig"), str):
        return None
    if not hmac.compare_digest(decision["sig"], _signature(key, uid, decision)):
        return None
    return decision


def decisions_of(key: bytes, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every verified decision on a FlowRun, by annotation key."""
    meta = body.get("metadata") or {}
    uid = meta.get("uid", "")
    found = {}
    for name, value in (meta.get("annotations") or {}).items():
        if name.startswith(DECISION_PREFIX):
            decision = read_decision(key, uid, value)
            if decision is not None:
                found[name] = decision
    return found


def approval_events(body: dict[str, Any]) -> tuple[ApprovalEvent, ...]:
    """The verified decisions on a FlowRun, as the engine's approval events (oldest first)."""
    events = [
        ApprovalEvent(
            step=d["step"],
            user=d["user"],
            groups=tuple(d.get("groups") or ()),
            decision=d["decision"],
            payload=d.get("payload"),
            comment=d.get("comment"),
            at=datetime.fromisoformat(d["at"]),
        )
        for d in decisions_of(signing_key(), body).values()
        if d.get("decision") in ("approve", "reject")
    ]
    return tuple(sorted(events, key=lambda e: e.at))


def requester_of(body: dict[str, Any]) -> str | None:
    """Who started the run, when a verified record of it exists (none yet: runs are created directly)."""
    return None


# --- who may decide ----------------------------------------------------------------------------------------


def find_pending(status: dict[str, Any], step: str) -> dict[str, Any] | None:
    """The pending approval `step` names: its full path (`loop/2/approve`) or its id."""
    pending = status.get("pendingApprovals") or []
    exact = [p for p in pending if p.get("step") == step]
    by_id = [p for p in pending if str(p.get("step", "")).rsplit("/", 1)[-1] == step]
    matches = exact or by_id
    return matches[0] if len(matches) == 1 else None


def allowed(pending: dict[str, Any], user: str, groups: list[str]) -> bool:
    """The engine's rule (a listed user, a member of a listed `group:`, anyone when none is listed)."""
    event = ApprovalEvent(
        step=str(pending.get("step")),
        user=user,
        groups=tuple(groups),
        decision="approve",
        at=datetime.now(UTC),
    )
    return may_decide(PendingApproval.model_validate(pending), event, requester=None)


def _reject(message: str, code: int = 403) -> kopf.AdmissionError:
    return kopf.AdmissionError(message, code=code)


def decide_request(
    body: dict[str, Any], userinfo: dict[str, Any], now: datetime
) -> tuple[str, dict[str, Any]]:
    """Check an approve/reject request: the decision to record (annotation key, decision), else raise."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    name = meta.get("name", "")
    approve, reject = annotations.get(APPROVE), annotations.get(REJECT)
    if approve is not None and reject is not None:
        raise _reject(f"set only one of {APPROVE} or {REJECT}", 400)
    step = str(approve if approve is not None else reject).strip()
    status = body.get("status") or {}
    pending = find_pending(status, step)
    if pending is None:
        waiting = ", ".join(str(p.get("step")) for p in status.get("pendingApprovals") or []) or "none"
        raise _reject(
            f"flowrun {name}: step {step!r} is not waiting for approval (steps waiting: {waiting})", 409
        )
    user = str(userinfo.get("username") or "")
    groups = [str(g) for g in userinfo.get("groups") or []]
    if not allowed(pending, user, groups):
        who = ", ".join(pending.get("approvers") or [])
        verb = "approve" if approve is not None else "reject"
        raise _reject(f"{user} may not {verb} step {pending['step']} of flowrun {name}; approvers: {who}")
    decision: dict[str, Any] = {
        "step": pending["step"],
        "user": user,
        "groups": groups,
        "decision": "approve" if approve is not None else "reject",
        "at": now.isoformat(),
    }
    if annotations.get(COMMENT):
        decision["comment"] = annotations[COMMENT]
    if annotations.get(PAYLOAD) is not None:
        decision["payload"] = payload_from(annotations[PAYLOAD], pending.get("form"))
    return decision_key(pending["step"], user), decision


def payload_from(text: str, form: dict[str, Any] | None) -> Any:
    """The resume payload (`resume` in the next step), checked against the step's resume form."""
    if len(text) > MAX_PAYLOAD:
        raise _reject(f"{PAYLOAD} is larger than {MAX_PAYLOAD} bytes", 400)
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise _reject(f"{PAYLOAD} must be JSON: {exc}", 400) from None
    if form:
        schema = form.get("schema", form) if isinstance(form, dict) else form
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(payload))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "payload"
            raise _reject(f"{PAYLOAD} does not match the step's resume form at {where}: {error.message}", 400)
    return payload


# --- admission handlers ------------------------------------------------------------------------------------


@kopf.on.mutate(GROUP, VERSION, "flowruns", operations=["UPDATE"], id="approve")
def record_decision(body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, **_: Any) -> None:
    """Turn `kubemill.dev/approve|reject=<step>` by a listed approver into a signed decision annotation."""
    raw = dict(body)
    annotations = (raw.get("metadata") or {}).get("annotations") or {}
    if APPROVE not in annotations and REJECT not in annotations:
        return
    key, decision = decide_request(raw, dict(userinfo), datetime.now(UTC))
    uid = raw["metadata"].get("uid", "")
    patch.metadata.annotations[key] = sign_decision(signing_key(), uid, decision)
    for name in REQUEST_ANNOTATIONS:
        if name in annotations:
            patch.metadata.annotations[name] = None


@kopf.on.validate(GROUP, VERSION, "flowruns", operations=["UPDATE"], id="decisions")
def guard_decisions(body: kopf.Body, userinfo: kopf.UserInfo, **kwargs: Any) -> None:
    """Decision annotations change only as the mutating webhook writes them: signed, for the requester."""
    new_annotations: dict[str, str] = dict(body.metadata.annotations)
    old: kopf.Body | None = kwargs.get("old")
    old_annotations: dict[str, str] = dict(old.metadata.annotations) if old is not None else {}
    user = str(userinfo.get("username") or "")
    uid = body.metadata.uid or ""
    key = signing_key()
    for name in {*new_annotations, *old_annotations}:
        if not name.startswith(DECISION_PREFIX) or new_annotations.get(name) == old_annotations.get(name):
            continue
        if name not in new_annotations:
            raise _reject(f"approval decisions cannot be removed ({name})")
        decision = read_decision(key, uid, new_annotations[name])
        # signed by this operator: by the mutating webhook for the requester, or for a resume URL
        if decision is None or (decision.get("user") != user and decision.get("via") != "resume-url"):
            raise _reject(f"{name} is an approval decision; set {APPROVE} or {REJECT} instead")


# --- serving -----------------------------------------------------------------------------------------------


async def _no_server(fn: Any) -> Any:
    """Stands in for the webhook server when it is turned off (Kopf insists on one when handlers exist)."""
    import asyncio

    await asyncio.Event().wait()
    yield {}


@kopf.on.startup()
def serve_approvals(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Start the admission webhook (or not, with KUBEMILL_WEBHOOK=off) and warm the signing key."""
    settings.admission.managed = None
    server: Any = admission.ApprovalsWebhookServer() if admission.enabled() else _no_server
    settings.admission.server = server
    signing_key()
