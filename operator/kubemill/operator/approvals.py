"""Approvals with verified identity: who may decide, what a decision records, and the admission checks.

Kubernetes does not record who set an annotation, and nothing a client sends (a signature, a copied
annotation, a crafted AdmissionReview) can stand for a person. What the API server does know is who makes
each request: `request.userInfo`, which it authenticated. kubemill's ledger rests on that alone.

- A person runs `kubectl annotate flowrun/X kubemill.dev/approve=<step>` (or `reject`, with optional
  `kubemill.dev/comment` and `kubemill.dev/payload` in the same command). The mutating webhook
  (`record_decision`) checks the requester against the step's approvers in the *stored* status
  (`oldObject`: a client cannot send its own status through the main resource, and the mutating stage may
  see one) and replaces the request annotations by one decision annotation
  `approval.kubemill.dev/<hash of step and user>` naming the requester.
- The validating webhook (`guard_decisions`, on CREATE and UPDATE of FlowRuns and their status, after every
  mutation) is what makes a stored decision trustworthy: every decision annotation that a request adds or
  changes must name the requester as the API server authenticated them (user and groups), for a step the
  stored status says is waiting, by someone that step allows; no request may remove one, none may arrive on
  CREATE (a copied decision is refused there), and request annotations that the mutating webhook did not
  consume (a payload set on its own, to be picked up by somebody else's approval) are refused. The only
  other writer is the operator itself (its own, API-server-authenticated user), recording a resume-URL
  decision after checking the URL's signature.
- `kubemill.dev/requested-by` is stamped on CREATE with the creator (for `self_approval_disabled`) and
  guarded the same way: equal to the requester on CREATE (the operator may copy a parent's into a child),
  never changed after.

So the FlowRun handler can trust every decision annotation it reads: each one passed the validating check
on the request that wrote it. Replying to a forged AdmissionReview gives nothing: the webhook signs nothing
and its answers are not stored anywhere but through the API server.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import kopf

from kubemill import constants
from kubemill.engine import ApprovalEvent, PendingApproval
from kubemill.engine.approvals import may_decide
from kubemill.errors import KubemillError
from kubemill.k8s.api import KubeApi
from kubemill.models.common import API_VERSION

log = logging.getLogger("kubemill.approvals")
GROUP, VERSION = API_VERSION.split("/")
APPROVE = constants.ANNOTATION_APPROVE
REJECT = constants.ANNOTATION_REJECT
COMMENT = constants.ANNOTATION_COMMENT
PAYLOAD = constants.ANNOTATION_PAYLOAD
REQUESTED_BY = constants.ANNOTATION_REQUESTED_BY
REQUEST_ANNOTATIONS = (APPROVE, REJECT, COMMENT, PAYLOAD)
DECISION_PREFIX = "approval.kubemill.dev/"
MAX_PAYLOAD = 16 * 1024
CLOCK_SKEW = timedelta(minutes=5)
"""How far a decision's recorded time may be from the webhook's clock (a decision cannot be backdated)."""
VIA_RESUME_URL = "resume-url"


# --- decisions (pure) --------------------------------------------------------------------------------------


def decision_key(step: str, user: str) -> str:
    """One annotation per (step, person): a second approval by the same person replaces the first."""
    return DECISION_PREFIX + hashlib.sha256(f"{step}\x00{user}".encode()).hexdigest()[:16]


def encode_decision(decision: Mapping[str, Any]) -> str:
    return json.dumps(dict(decision), sort_keys=True, separators=(",", ":"))


def parse_decision(value: str) -> dict[str, Any] | None:
    """The decision an annotation holds, or None when it is not one (malformed, wrong types)."""
    try:
        decision = json.loads(value)
    except ValueError:
        return None
    if not isinstance(decision, dict):
        return None
    if not all(isinstance(decision.get(k), str) for k in ("step", "user", "decision", "at")):
        return None
    if decision["decision"] not in ("approve", "reject"):
        return None
    groups = decision.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        return None
    try:
        datetime.fromisoformat(decision["at"])
    except ValueError:
        return None
    return decision


def decisions_of(annotations: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Every decision annotation on a FlowRun by key (each passed `guard_decisions` when written)."""
    found = {}
    for name, value in annotations.items():
        if name.startswith(DECISION_PREFIX):
            decision = parse_decision(value)
            if decision is not None and name == decision_key(decision["step"], decision["user"]):
                found[name] = decision
    return found


def approval_events(body: Mapping[str, Any]) -> tuple[ApprovalEvent, ...]:
    """The decisions on a FlowRun, as the engine's approval events (oldest first)."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
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
        for d in decisions_of(annotations).values()
    ]
    return tuple(sorted(events, key=lambda e: e.at))


def requester_of(body: Mapping[str, Any]) -> str | None:
    """Who created the run (or the run its parent chain started from), as the API server saw them."""
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_BY)
    try:
        found = json.loads(value) if value else None
    except ValueError:
        return None
    user = found.get("user") if isinstance(found, dict) else None
    return user if isinstance(user, str) and user else None


def requested_by(userinfo: Mapping[str, Any]) -> str:
    """The `kubemill.dev/requested-by` value for a requester."""
    groups = sorted(str(g) for g in userinfo.get("groups") or [])
    return json.dumps({"user": str(userinfo.get("username") or ""), "groups": groups}, separators=(",", ":"))


# --- who may decide (pure) ---------------------------------------------------------------------------------


def find_pending(status: Mapping[str, Any], step: str) -> dict[str, Any] | None:
    """The pending approval `step` names: its full path (`loop/2/approve`) or its id."""
    pending = status.get("pendingApprovals") or []
    exact = [p for p in pending if p.get("step") == step]
    by_id = [p for p in pending if str(p.get("step", "")).rsplit("/", 1)[-1] == step]
    matches = exact or by_id
    return dict(matches[0]) if len(matches) == 1 else None


def refusal(
    pending: Mapping[str, Any], user: str, groups: list[str], requester: str | None, run: str, verb: str
) -> str | None:
    """Why `user` may not decide this step (None when they may): the engine's rule, plus the admission's
    stricter reading of `self_approval_disabled` (an unknown requester cannot be ruled out)."""
    step = pending.get("step")
    approval = PendingApproval.model_validate(pending)
    if approval.self_approval_disabled and (requester is None or requester == user):
        if requester is None:
            return (
                f"step {step} of flowrun {run} disallows self-approval and the run's requester is unknown "
                f"(it has no {REQUESTED_BY}); nobody can {verb} it"
            )
        return f"{user} started flowrun {run}; step {step} disallows self-approval"
    event = ApprovalEvent(
        step=str(step), user=user, groups=tuple(groups), decision="approve", at=datetime.now(UTC)
    )
    if may_decide(approval, event, requester=requester):
        return None
    who = ", ".join(pending.get("approvers") or [])
    return f"{user} may not {verb} step {step} of flowrun {run}; approvers: {who}"


def refused(message: str, code: int = 403) -> kopf.AdmissionError:
    return kopf.AdmissionError(message, code=code)


def decide_request(
    annotations: Mapping[str, str],
    old: Mapping[str, Any],
    userinfo: Mapping[str, Any],
    now: datetime,
) -> tuple[str, dict[str, Any]]:
    """Check an approve/reject request against the stored run `old`: (annotation key, decision)."""
    meta = old.get("metadata") or {}
    name = meta.get("name", "")
    approve, reject = annotations.get(APPROVE), annotations.get(REJECT)
    if approve is not None and reject is not None:
        raise refused(f"set only one of {APPROVE} or {REJECT}", 400)
    step = str(approve if approve is not None else reject).strip()
    status = old.get("status") or {}
    pending = find_pending(status, step)
    if pending is None:
        waiting = ", ".join(str(p.get("step")) for p in status.get("pendingApprovals") or []) or "none"
        raise refused(
            f"flowrun {name}: step {step!r} is not waiting for approval (steps waiting: {waiting})", 409
        )
    user = str(userinfo.get("username") or "")
    groups = sorted(str(g) for g in userinfo.get("groups") or [])
    verb = "approve" if approve is not None else "reject"
    why = refusal(pending, user, groups, requester_of(old), name, verb)
    if why is not None:
        raise refused(why)
    decision: dict[str, Any] = {
        "step": pending["step"],
        "user": user,
        "groups": groups,
        "decision": verb,
        "at": now.isoformat(),
    }
    if annotations.get(COMMENT):
        decision["comment"] = annotations[COMMENT]
    if annotations.get(PAYLOAD) is not None:
        decision["payload"] = payload_from(annotations[PAYLOAD], pending.get("form"))
    return decision_key(pending["step"], user), decision


def own_request(annotations: Mapping[str, str], stored: Mapping[str, str]) -> dict[str, str]:
    """The request annotations this request itself sets: a payload or comment already stored was somebody
    else's (an approval never carries another person's payload)."""
    return {
        k: v
        for k, v in annotations.items()
        if k in REQUEST_ANNOTATIONS and (k in (APPROVE, REJECT) or stored.get(k) != v)
    }


def payload_from(text: str, form: Any) -> Any:
    """The resume payload (`resume` in the next step), checked against the step's resume form."""
    if len(text) > MAX_PAYLOAD:
        raise refused(f"{PAYLOAD} is larger than {MAX_PAYLOAD} bytes", 400)
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise refused(f"{PAYLOAD} must be JSON: {exc}", 400) from None
    if form:
        schema = form.get("schema", form) if isinstance(form, dict) else form
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(payload))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "payload"
            raise refused(f"{PAYLOAD} does not match the step's resume form at {where}: {error.message}", 400)
    return payload


def check_request(  # noqa: C901, PLR0912 - complexity debt, docs/architecture.md
    operation: str,
    new: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
    operator_user: str | None,
    now: datetime,
) -> None:
    """The validating check of one CREATE or UPDATE of a FlowRun (its final form, after every mutation).
    Raises `kopf.AdmissionError` naming what is refused."""
    new_ann: Mapping[str, str] = (new.get("metadata") or {}).get("annotations") or {}
    old_ann: Mapping[str, str] = ((old or {}).get("metadata") or {}).get("annotations") or {}
    user = str(userinfo.get("username") or "")
    groups = sorted(str(g) for g in userinfo.get("groups") or [])
    is_operator = operator_user is not None and user == operator_user
    name = (new.get("metadata") or {}).get("name", "")

    for key in REQUEST_ANNOTATIONS:
        if key in new_ann and new_ann.get(key) != old_ann.get(key):
            raise refused(
                f"{key} is a request, consumed by the approvals webhook: set it together with {APPROVE} or "
                f"{REJECT} in the same command, on a run that is waiting"
                if operation == "UPDATE"
                else f"a FlowRun cannot be created with {key}: approve or reject once its step waits",
                400,
            )

    if REQUESTED_BY in new_ann or REQUESTED_BY in old_ann:
        if operation == "CREATE":
            if not is_operator and new_ann[REQUESTED_BY] != requested_by(userinfo):
                raise refused(
                    f"{REQUESTED_BY} is set by kubemill to the run's creator ({user}), not by clients"
                )
        elif new_ann.get(REQUESTED_BY) != old_ann.get(REQUESTED_BY):
            raise refused(f"{REQUESTED_BY} records who started the run and cannot change")

    status = (old or {}).get("status") or {}
    for key in sorted({*new_ann, *old_ann}):
        if not key.startswith(DECISION_PREFIX) or new_ann.get(key) == old_ann.get(key):
            continue
        if key not in new_ann:
            raise refused(f"approval decisions cannot be removed ({key})")
        if operation == "CREATE":
            raise refused(
                f"a FlowRun cannot be created with approval decisions ({key}): decisions are made on a "
                "waiting run, by its approvers"
            )
        decision = parse_decision(new_ann[key])
        if decision is None or key != decision_key(decision["step"], decision["user"]):
            raise refused(f"{key} is an approval decision; set {APPROVE} or {REJECT} instead")
        if decision.get("via") == VIA_RESUME_URL:
            if not is_operator:
                raise refused(f"{key}: only the operator records resume-URL decisions")
        elif decision["user"] != user or sorted(decision.get("groups") or []) != groups:
            raise refused(f"{key} names {decision['user']}, not the requester {user}; set {APPROVE} instead")
        if abs(datetime.fromisoformat(decision["at"]) - now) > CLOCK_SKEW:
            raise refused(f"{key}: a decision is recorded at the time it is made, not {decision['at']}")
        pending = find_pending(status, decision["step"])
        if pending is None or pending.get("step") != decision["step"]:
            raise refused(
                f"{key}: step {decision['step']!r} of flowrun {name} is not waiting for approval", 409
            )
        why = refusal(
            pending,
            decision["user"],
            list(decision.get("groups") or []),
            requester_of(old or {}),
            name,
            decision["decision"],
        )
        if why is not None:
            raise refused(why)


# --- the operator's own identity ---------------------------------------------------------------------------


def learn_operator_user(api: KubeApi) -> str | None:
    """The user the API server authenticates this operator as (a SelfSubjectReview; None if it can't say)."""
    try:
        review = api.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        return str(review["status"]["userInfo"]["username"])
    except KubemillError as exc:  # without it, only people's own decisions pass
        log.warning("cannot learn the operator's own user (resume URLs will be refused): %s", exc)
        return None
