"""The approvals' admission webhooks (Kopf handlers): who creates a run, turning an approval request into a
decision, and guarding every decision annotation; and starting the webhook server. What they decide is in
`approvals` (pure functions of the request and the stored object)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from kubemill.operator import admission
from kubemill.operator.approvals import (
    APPROVE,
    GROUP,
    REJECT,
    REQUEST_ANNOTATIONS,
    REQUESTED_BY,
    VERSION,
    check_request,
    decide_request,
    encode_decision,
    learn_operator_user,
    own_request,
    refused,
    requested_by,
)
from kubemill.operator.runtime import of

# --- admission handlers ------------------------------------------------------------------------------------
# They are coroutines that do no I/O: Kopf runs them on its event loop, never in the thread pool that the
# reconciles (and their expression evaluations) use, so no number of busy reconciles delays an approval.


@kopf.on.mutate(GROUP, VERSION, "flowruns", operations=["CREATE"], id="requester")
async def stamp_requester(
    userinfo: kopf.UserInfo, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Record who creates a run (the operator keeps the one it copied from a parent)."""
    own = of(memo).operator_user
    if REQUESTED_BY in body.metadata.annotations and str(userinfo.get("username")) == own:
        return
    patch.metadata.annotations[REQUESTED_BY] = requested_by(dict(userinfo))


@kopf.on.mutate(GROUP, VERSION, "flowruns", operations=["UPDATE"], id="approve")
async def record_decision(body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, **kwargs: Any) -> None:
    """Turn `kubemill.dev/approve|reject=<step>` by an allowed approver into a decision annotation."""
    annotations: dict[str, str] = dict(body.metadata.annotations)
    if APPROVE not in annotations and REJECT not in annotations:
        return
    old: kopf.Body | None = kwargs.get("old")
    if old is None:
        raise refused("an approval is an update of an existing FlowRun", 400)
    stored = dict(old)
    mine = own_request(annotations, dict(old.metadata.annotations))
    key, decision = decide_request(mine, stored, dict(userinfo), datetime.now(UTC))
    patch.metadata.annotations[key] = encode_decision(decision)
    for name in REQUEST_ANNOTATIONS:
        if name in annotations:
            patch.metadata.annotations[name] = None


@kopf.on.validate(
    GROUP, VERSION, "flowruns", operations=["CREATE", "UPDATE"], subresource="*", id="decisions"
)
async def guard_decisions(body: kopf.Body, userinfo: kopf.UserInfo, memo: kopf.Memo, **kwargs: Any) -> None:
    """Decision and requester annotations are only ever the API server's view of who asked (see above)."""
    old: kopf.Body | None = kwargs.get("old")
    check_request(
        str(kwargs.get("operation")),
        dict(body),
        dict(old) if old is not None else None,
        dict(userinfo),
        of(memo).operator_user,
        datetime.now(UTC),
    )


# --- serving -----------------------------------------------------------------------------------------------


async def _no_server(fn: Any) -> Any:
    """Stands in for the webhook server when it is turned off (Kopf insists on one when handlers exist)."""
    import asyncio

    await asyncio.Event().wait()
    yield {}


@kopf.on.startup()
def serve_approvals(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Start the admission webhook (or not, with KUBEMILL_WEBHOOK=off) and learn the operator's own user."""
    op = of(memo)
    settings.admission.managed = None
    server: Any = admission.ApprovalsWebhookServer(op.kube) if admission.enabled() else _no_server
    settings.admission.server = server
    op.operator_user = learn_operator_user(op.kube)
