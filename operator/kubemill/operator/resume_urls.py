"""Resume URLs: what `wmill.get_resume_urls()` returns, signed by the operator and served by it.

A flow step followed by an approval step (or carrying Windmill's `suspend`) gets three URLs, as Windmill
gives them: `resume` (approve), `cancel` (reject) and `approvalPage` (a small page with both buttons). Each
is HMAC-signed over (namespace, run, run uid, step, action) with the operator's key, so it works for that
step of that run only, and after an operator restart too. The runner adds `approver=<name>` (Windmill's
`get_resume_urls(approver)`); the operator records the decision on behalf of that approver, who must be a
listed approver of the step (a user name: groups cannot be checked for someone who is not signed in), in
the same signed decision annotation the admission webhook writes, marked `via: resume-url`. Whoever holds a
URL can use it, as in Windmill: hand it only to the approver.

The child ScriptRun carries the URLs in the `kubemill.dev/resume-urls` annotation (JSON); the Job builder
passes it to the runner as `KUBEMILL_RESUME_URLS`. Settings: `KUBEMILL_RESUME_ADDR` (default 127.0.0.1),
`KUBEMILL_RESUME_PORT` (default: a free port) where the operator listens, `KUBEMILL_RESUME_URL` the base
URL people reach it at (default http://<addr>:<port>).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import kopf
from aiohttp import web

from kubemill.errors import KubemillError, NotFound
from kubemill.models.common import API_VERSION
from kubemill.models.openflow import Approval, FlowModule, OpenFlow
from kubemill.operator.approvals import decision_key, find_pending, payload_from, sign_decision
from kubemill.operator.signing import signing_key

log = logging.getLogger("kubemill.resume")
ANNOTATION = "kubemill.dev/resume-urls"
ACTIONS = ("resume", "cancel")
_base_url: str | None = None


def signature(key: bytes, namespace: str, run: str, uid: str, step: str, action: str) -> str:
    message = "\x00".join((namespace, run, uid, step, action)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def urls_for(base: str, key: bytes, namespace: str, run: str, uid: str, step: str) -> dict[str, str]:
    """`{approvalPage, resume, cancel}` for one step of one run."""
    root = f"{base.rstrip('/')}/approvals/{quote(namespace)}/{quote(run)}/{quote(step, safe='')}"
    return {
        "approvalPage": f"{root}?sig={signature(key, namespace, run, uid, step, 'page')}",
        "resume": f"{root}/resume?sig={signature(key, namespace, run, uid, step, 'resume')}",
        "cancel": f"{root}/cancel?sig={signature(key, namespace, run, uid, step, 'cancel')}",
    }


def approval_after(flow: OpenFlow, step_path: str) -> str | None:
    """The approval step that waits after `step_path` runs: the step itself when it has `suspend`, or the
    approval step right after it in the same sequence; None when there is none."""
    prefix, _, step_id = step_path.rpartition("/")
    prefix = f"{prefix}/" if prefix else ""

    def search(modules: tuple[FlowModule, ...]) -> str | None:
        for index, module in enumerate(modules):
            if module.id == step_id:
                if module.suspend is not None:
                    return step_path
                following = modules[index + 1] if index + 1 < len(modules) else None
                if following is not None and isinstance(following.value, Approval):
                    return prefix + following.id
                return None
            for body in _sequences(module):
                found = search(body)
                if found is not None:
                    return found
        return None

    return search(flow.value.modules)


def _sequences(module: FlowModule) -> list[tuple[FlowModule, ...]]:
    value: Any = module.value
    found: list[tuple[FlowModule, ...]] = []
    if hasattr(value, "modules"):
        found.append(value.modules)
    for branch in getattr(value, "branches", ()) or ():
        found.append(branch.modules)
    if getattr(value, "default", None):
        found.append(value.default)
    return found


def base_url() -> str | None:
    """Where resume URLs point (None until the server started)."""
    return _base_url


def resume_urls_annotation(flow: OpenFlow, step_path: str, namespace: str, run: str, uid: str) -> str | None:
    """The JSON for a child's `kubemill.dev/resume-urls`, or None when no approval follows its step."""
    step = approval_after(flow, step_path)
    if step is None or _base_url is None:
        return None
    return json.dumps(urls_for(_base_url, signing_key(), namespace, run, uid, step), separators=(",", ":"))


# --- serving -----------------------------------------------------------------------------------------------


def record(
    namespace: str, run: str, step: str, action: str, sig: str, approver: str | None, body: str
) -> str:
    """Check the URL and the approver, then record the decision; the message to show. Raises HTTPException."""
    from kubemill.operator import kube

    api = kube()
    try:
        flowrun = api.get(API_VERSION, "FlowRun", namespace, run)
    except NotFound:
        raise web.HTTPNotFound(text=f"no flow run {run} in {namespace}") from None
    uid = flowrun["metadata"].get("uid", "")
    key = signing_key()
    if not hmac.compare_digest(sig, signature(key, namespace, run, uid, step, action)):
        raise web.HTTPForbidden(text="this link is not valid for this step of this run")
    pending = find_pending(flowrun.get("status") or {}, step)
    if pending is None:
        raise web.HTTPConflict(text=f"step {step} of {run} is not waiting for approval")
    listed = [a for a in pending.get("approvers") or [] if not a.startswith("group:")]
    if pending.get("approvers") and approver not in listed:
        who = ", ".join(listed) or "only groups, which a link cannot verify"
        named = approver or "nobody (add ?approver=<name>)"
        raise web.HTTPForbidden(text=f"{named} is not an approver of step {step} (approvers: {who})")
    decision: dict[str, Any] = {
        "step": pending["step"],
        "user": approver or "anonymous",
        "groups": [],
        "decision": "approve" if action == "resume" else "reject",
        "at": datetime.now(UTC).isoformat(),
        "via": "resume-url",
    }
    if body.strip():
        try:
            decision["payload"] = payload_from(body, pending.get("form"))
        except kopf.AdmissionError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
    annotation = {decision_key(pending["step"], decision["user"]): sign_decision(key, uid, decision)}
    api.patch(API_VERSION, "FlowRun", namespace, run, {"metadata": {"annotations": annotation}})
    verb = "approved" if action == "resume" else "rejected"
    return f"step {step} of {run} {verb} on behalf of {decision['user']}"


async def _handle(request: web.Request) -> web.Response:
    info = request.match_info
    action = info.get("action", "page")
    sig = request.query.get("sig", "")
    approver = request.query.get("approver")
    try:
        if action == "page":
            page = await asyncio.to_thread(_page, info["namespace"], info["run"], info["step"], sig, approver)
            return web.Response(text=page, content_type="text/html")
        if action not in ACTIONS:
            raise web.HTTPNotFound()
        body = await request.text() if request.method == "POST" else request.query.get("payload", "")
        message = await asyncio.to_thread(
            record, info["namespace"], info["run"], info["step"], action, sig, approver, body
        )
    except KubemillError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from None
    return web.json_response({"message": message})


def _page(namespace: str, run: str, step: str, sig: str, approver: str | None) -> str:
    """A page with Approve and Reject buttons (posting to the signed resume and cancel URLs)."""
    from kubemill.operator import kube

    try:
        uid = kube().get(API_VERSION, "FlowRun", namespace, run)["metadata"].get("uid", "")
    except NotFound:
        raise web.HTTPNotFound(text=f"no flow run {run} in {namespace}") from None
    key = signing_key()
    if not hmac.compare_digest(sig, signature(key, namespace, run, uid, step, "page")):
        raise web.HTTPForbidden(text="this link is not valid for this step of this run")
    urls = urls_for(_base_url or "", key, namespace, run, uid, step)
    extra = f"&approver={quote(approver)}" if approver else ""
    title = html.escape(f"{run}: {step}")
    return (
        f"<!doctype html><title>{title}</title><h1>{title}</h1>"
        f"<form method=post action='{html.escape(urls['resume'] + extra)}'><button>Approve</button></form>"
        f"<form method=post action='{html.escape(urls['cancel'] + extra)}'><button>Reject</button></form>"
    )


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


@kopf.on.startup()
async def serve_resume_urls(**_: Any) -> None:
    """Listen for resume URLs (in Kopf's event loop, for the operator's lifetime)."""
    global _base_url
    addr = os.environ.get("KUBEMILL_RESUME_ADDR", "127.0.0.1")
    port = int(os.environ.get("KUBEMILL_RESUME_PORT", "0")) or _free_port(addr)
    app = web.Application()
    route = "/approvals/{namespace}/{run}/{step}"
    app.add_routes([web.get(route, _handle), web.route("*", route + "/{action}", _handle)])
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, addr, port).start()
    _base_url = os.environ.get("KUBEMILL_RESUME_URL") or f"http://{addr}:{port}"
    log.info("resume URLs served at %s", _base_url)
