"""Resume URLs: what `wmill.get_resume_urls()` returns, signed by the operator and served by it.

A flow step followed by an approval step (or carrying Windmill's `suspend`) gets Windmill's three URLs:
`resume` (approve), `cancel` (reject) and `approvalPage`. As in Windmill, each set names its approver: the
runner gets one set for each user the step lists as an approver (`get_resume_urls("alice@example.com")`),
and an anonymous set (`get_resume_urls()`), which decides only a step that lists nobody. Each URL is
HMAC-signed (`signature`) over a canonical encoding of (namespace, run, run uid, step, action, approver,
expiry) with the operator's key, so it works for that step of that run, for that approver, until it expires
(the step's timeout, or 7 days), after an operator restart too. Changing any part of it (the approver
above all) invalidates it.

Only POST decides: a GET of any of the URLs (a chat client's link preview, a crawler) shows the page with
the Approve and Reject buttons and changes nothing. The operator then records the decision on the signed
approver's behalf, marked `via: resume-url`, after the same checks an approval by `kubectl annotate` gets
(the step waits, the approver may decide it, self-approval rules).

The URLs are capabilities, so nobody but the step's runner sees them: the FlowRun handler writes them into a
Secret `<child run>-resume` (owned by the FlowRun) before it creates the child, and the child's pod mounts it
(an optional volume; `KUBEMILL_RESUME_URLS_FILE`). They are in no annotation, status or pod env, which the
`view` role and the run-only role can read. Settings: `KUBEMILL_RESUME_ADDR` (default 127.0.0.1),
`KUBEMILL_RESUME_PORT` (default: a free port) where the operator listens, `KUBEMILL_RESUME_URL` the base
URL people reach it at (default http://<addr>:<port>).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import html
import json
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import kopf
from aiohttp import web

from kubemill.errors import KubemillError, NotFound
from kubemill.k8s.api import KubeApi
from kubemill.k8s.builders import RESUME_KEY, resume_secret_name
from kubemill.models.common import API_VERSION
from kubemill.models.openflow import Approval, FlowModule, OpenFlow
from kubemill.operator.approvals import (
    VIA_RESUME_URL,
    decision_key,
    encode_decision,
    find_pending,
    payload_from,
    refusal,
    requester_of,
)
from kubemill.operator.signing import SigningKey

log = logging.getLogger("kubemill.resume")
ACTIONS = ("resume", "cancel")
DEFAULT_EXPIRY = timedelta(days=7)
ANONYMOUS = "anonymous"


def signature(
    key: bytes, namespace: str, run: str, uid: str, step: str, action: str, approver: str, expires: int
) -> str:
    """HMAC-SHA256 over the JSON array of every field: no field can spill into its neighbour."""
    message = json.dumps([namespace, run, uid, step, action, approver, expires], separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def urls_for(
    base: str, key: bytes, namespace: str, run: str, uid: str, step: str, approver: str, expires: int
) -> dict[str, str]:
    """`{approvalPage, resume, cancel}` for one approver of one step of one run."""
    root = f"{base.rstrip('/')}/approvals/{quote(namespace)}/{quote(run)}/{quote(step, safe='')}"

    def url(action: str, suffix: str) -> str:
        sig = signature(key, namespace, run, uid, step, action, approver, expires)
        return f"{root}{suffix}?" + urlencode({"approver": approver, "expires": expires, "sig": sig})

    return {
        "approvalPage": url("page", ""),
        "resume": url("resume", "/resume"),
        "cancel": url("cancel", "/cancel"),
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


def _approval_module(flow: OpenFlow, step_path: str) -> FlowModule | None:
    step_id = step_path.rsplit("/", 1)[-1]
    return next((m for m in flow.value.all_modules() if m.id == step_id), None)


class ResumeLinks:
    """Where this operator serves resume URLs (`base_url`, known once the server listens) and the key that
    signs them; one per operator process (`runtime.Operator.links`)."""

    def __init__(self, api: KubeApi, key: SigningKey) -> None:
        self.api = api
        self.key = key
        self.base_url: str | None = None

    def document(
        self, flow: OpenFlow, step_path: str, namespace: str, run: str, uid: str, now: datetime
    ) -> str | None:
        """The resume URLs for the child that runs `step_path`, or None (see `resume_urls_document`)."""
        if self.base_url is None or approval_after(flow, step_path) is None:
            return None
        return resume_urls_document(flow, step_path, namespace, run, uid, now, self.base_url, self.key.get())


def resume_urls_document(
    flow: OpenFlow, step_path: str, namespace: str, run: str, uid: str, now: datetime, base: str, key: bytes
) -> str | None:
    """The JSON a child's runner reads, or None when no approval follows its step: `{approvalPage, resume,
    cancel}` for the anonymous approver (Windmill's `get_resume_urls()`; they decide only a step that lists
    no approvers) and `approvers: {name: {...}}` for each user the step lists (`get_resume_urls(name)`)."""
    step = approval_after(flow, step_path)
    if step is None:
        return None
    module = _approval_module(flow, step)
    timeout: float | None = None
    approvers: tuple[str, ...] = ()
    if module is not None and isinstance(module.value, Approval):
        timeout, approvers = module.value.timeout, tuple(module.value.approvers)
    elif module is not None and module.suspend is not None:
        timeout = module.suspend.timeout
    expires = int((now + (timedelta(seconds=timeout) if timeout else DEFAULT_EXPIRY)).timestamp())
    users = [a for a in approvers if not a.startswith("group:")]
    return json.dumps(
        {
            **urls_for(base, key, namespace, run, uid, step, ANONYMOUS, expires),
            "approvers": {u: urls_for(base, key, namespace, run, uid, step, u, expires) for u in users},
        },
        separators=(",", ":"),
    )


def resume_secret(owner: dict[str, Any], child: str, document: str) -> dict[str, Any]:
    """The Secret with a child's resume URLs, owned by the FlowRun (so it goes with the run)."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": resume_secret_name(child),
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "kubemill"},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "FlowRun",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "type": "Opaque",
        "stringData": {RESUME_KEY: document},
    }


# --- serving -----------------------------------------------------------------------------------------------


class Link:
    """One resume URL as it arrived: which step of which run, what it does, for whom, until when."""

    def __init__(self, request: web.Request) -> None:
        info, query = request.match_info, request.query
        self.namespace, self.run, self.step = info["namespace"], info["run"], info["step"]
        self.action = info.get("action", "page")
        self.approver = query.get("approver", "")
        self.sig = query.get("sig", "")
        text = query.get("expires", "")
        self.expires = int(text) if text.isdigit() else -1

    def verify(self, key: bytes, uid: str, action: str, now: datetime) -> None:
        """Raise unless the link was signed for exactly this (run uid, step, action, approver, expiry)."""
        if self.expires < 0:
            raise web.HTTPForbidden(text="this link is not valid: it has no expiry")
        expected = signature(
            key, self.namespace, self.run, uid, self.step, action, self.approver, self.expires
        )
        if not hmac.compare_digest(self.sig, expected):
            raise web.HTTPForbidden(text="this link is not valid for this step of this run")
        if now.timestamp() > self.expires:
            raise web.HTTPGone(
                text=f"this link expired at {datetime.fromtimestamp(self.expires, UTC).isoformat()}"
            )


def _flowrun(api: KubeApi, namespace: str, run: str) -> dict[str, Any]:
    try:
        return api.get(API_VERSION, "FlowRun", namespace, run)
    except NotFound:
        raise web.HTTPNotFound(text=f"no flow run {run} in {namespace}") from None


def record(links: ResumeLinks, link: Link, body: str, now: datetime) -> str:
    """Check the link and its approver, then record the decision; the message to show (or HTTPException)."""
    flowrun = _flowrun(links.api, link.namespace, link.run)
    link.verify(links.key.get(), flowrun["metadata"].get("uid", ""), link.action, now)
    pending = find_pending(flowrun.get("status") or {}, link.step)
    if pending is None or pending.get("step") != link.step:
        raise web.HTTPConflict(text=f"step {link.step} of {link.run} is not waiting for approval")
    listed = [a for a in pending.get("approvers") or [] if not a.startswith("group:")]
    if pending.get("approvers") and link.approver not in listed:
        who = ", ".join(listed) or "only groups, which a link cannot verify"
        raise web.HTTPForbidden(
            text=f"{link.approver} is not an approver of step {link.step} (approvers: {who})"
        )
    verb = "approve" if link.action == "resume" else "reject"
    if pending.get("selfApprovalDisabled") and link.approver == ANONYMOUS:
        raise web.HTTPForbidden(
            text=f"step {link.step} disallows self-approval: an anonymous link cannot decide it"
        )
    why = refusal(pending, link.approver, [], requester_of(flowrun), link.run, verb)
    if why is not None:
        raise web.HTTPForbidden(text=why)
    decision: dict[str, Any] = {
        "step": pending["step"],
        "user": link.approver,
        "groups": [],
        "decision": verb,
        "at": now.isoformat(),
        "via": VIA_RESUME_URL,
    }
    if body.strip():
        try:
            decision["payload"] = payload_from(body, pending.get("form"))
        except kopf.AdmissionError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
    annotation = {decision_key(pending["step"], link.approver): encode_decision(decision)}
    try:
        links.api.patch(
            API_VERSION, "FlowRun", link.namespace, link.run, {"metadata": {"annotations": annotation}}
        )
    except KubemillError as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    done = "approved" if verb == "approve" else "rejected"
    return f"step {link.step} of {link.run} {done} on behalf of {link.approver}"


async def _handle(links: ResumeLinks, request: web.Request) -> web.Response:
    link = Link(request)
    now = datetime.now(UTC)
    try:
        if request.method != "POST" or link.action == "page":
            page = await asyncio.to_thread(_page, links, link, now)
            return web.Response(text=page, content_type="text/html")
        if link.action not in ACTIONS:
            raise web.HTTPNotFound()
        message = await asyncio.to_thread(record, links, link, await request.text(), now)
    except KubemillError as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from None
    return web.json_response({"message": message})


def _page(links: ResumeLinks, link: Link, now: datetime) -> str:
    """A page with Approve and Reject buttons (each posting to its signed URL); a GET never decides."""
    flowrun = _flowrun(links.api, link.namespace, link.run)
    uid = flowrun["metadata"].get("uid", "")
    key = links.key.get()
    link.verify(key, uid, link.action, now)
    urls = urls_for(
        links.base_url or "", key, link.namespace, link.run, uid, link.step, link.approver, link.expires
    )
    title = html.escape(f"{link.run}: {link.step}")
    who = html.escape(link.approver)
    return (
        f"<!doctype html><title>{title}</title><h1>{title}</h1><p>Deciding as {who}.</p>"
        f"<form method=post action='{html.escape(urls['resume'])}'><button>Approve</button></form>"
        f"<form method=post action='{html.escape(urls['cancel'])}'><button>Reject</button></form>"
    )


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


@kopf.on.startup()
async def serve_resume_urls(memo: kopf.Memo, **_: Any) -> None:
    """Listen for resume URLs (in Kopf's event loop, for the operator's lifetime)."""
    from kubemill.operator.runtime import of

    links = of(memo).links
    addr = os.environ.get("KUBEMILL_RESUME_ADDR", "127.0.0.1")
    port = int(os.environ.get("KUBEMILL_RESUME_PORT", "0")) or _free_port(addr)
    app = web.Application()
    route = "/approvals/{namespace}/{run}/{step}"
    handle = functools.partial(_handle, links)
    app.add_routes([web.route("*", route, handle), web.route("*", route + "/{action}", handle)])
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, addr, port).start()
    links.base_url = os.environ.get("KUBEMILL_RESUME_URL") or f"http://{addr}:{port}"
    log.info("resume URLs served at %s", links.base_url)
