"""The web UI's JSON API: read kubemill objects, follow a run live, approve or reject a step — as the caller.

Every handler forwards the caller's bearer token to the API server (`kubemill.ui.kubeapi`), and a refusal
comes back with the API server's own status and message, so what a person sees in the browser is what
`kubectl` would tell them (RBAC, the approval admission webhook). Runs are started through the Windmill
endpoints of `kubemill.ui.webhooks`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from kubemill.k8s import runlogs
from kubemill.ui.kubeapi import ApiError, Body
from kubemill.ui.webhooks import API, TERMINAL, api_error, caller_token, refuse, run_result

KINDS = {
    "scripts": "Script",
    "flows": "Flow",
    "schedules": "Schedule",
    "scriptruns": "ScriptRun",
    "flowruns": "FlowRun",
    "resources": "Resource",
    "resourcetypes": "ResourceType",
    "variables": "Variable",
    "httptriggers": "HttpTrigger",
}
APPROVE, REJECT, COMMENT, PAYLOAD = (
    "kubemill.dev/approve",
    "kubemill.dev/reject",
    "kubemill.dev/comment",
    "kubemill.dev/payload",
)
WATCH_SECONDS = 300


def _kind(request: web.Request) -> str:
    plural = request.match_info["plural"]
    if plural not in KINDS:
        raise web.HTTPNotFound(text=f"unknown kind {plural!r} (one of {', '.join(KINDS)})")
    return KINDS[plural]


async def whoami(request: web.Request) -> web.StreamResponse:
    try:
        info = await request.app[API].whoami(caller_token(request))
    except ApiError as exc:
        return api_error(exc)
    return web.json_response({"username": info.get("username", ""), "groups": info.get("groups", [])})


async def namespaces(request: web.Request) -> web.StreamResponse:
    """Namespaces the caller may list (403 is normal for non-admins: the UI then asks for a name)."""
    try:
        answer = await request.app[API].request("GET", "/api/v1/namespaces", caller_token(request))
    except ApiError as exc:
        return api_error(exc)
    return web.json_response({"items": sorted(n["metadata"]["name"] for n in answer.get("items", []))})


async def list_objects(request: web.Request) -> web.StreamResponse:
    try:
        items = await request.app[API].list(caller_token(request), _kind(request), request.match_info["ns"])
    except ApiError as exc:
        return api_error(exc)
    items.sort(key=lambda o: o["metadata"].get("creationTimestamp", ""), reverse=True)
    return web.json_response({"items": items})


async def with_result(request: web.Request, token: str, obj: Body) -> Body:
    """A run with its result read from its ConfigMap when too large for the status (`resolvedResult`)."""
    status = obj.get("status") or {}
    if status.get("resultRef") and status.get("phase") in TERMINAL:
        try:
            obj["resolvedResult"] = await run_result(request.app[API], token, obj)
        except ApiError as exc:
            obj["resolvedResult"] = {"error": {"name": "ResultUnreadable", "message": exc.message}}
    return obj


async def get_object(request: web.Request) -> web.StreamResponse:
    token = caller_token(request)
    try:
        obj = await request.app[API].get(
            token, _kind(request), request.match_info["ns"], request.match_info["name"]
        )
        return web.json_response(await with_result(request, token, obj))
    except ApiError as exc:
        return api_error(exc)


async def watch_object(request: web.Request) -> web.StreamResponse:
    """The object now, then each change, as newline-delimited JSON, until it finishes or the client leaves."""
    api, token, kind = request.app[API], caller_token(request), _kind(request)
    ns, name = request.match_info["ns"], request.match_info["name"]
    try:
        obj = await api.get(token, kind, ns, name)
    except ApiError as exc:
        return api_error(exc)
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    async def send(item: Body) -> None:
        await response.write(json.dumps(await with_result(request, token, item)).encode() + b"\n")

    await send(obj)
    version = obj["metadata"]["resourceVersion"]
    try:
        while ((obj.get("status") or {}).get("phase")) not in TERMINAL:
            async for event in api.watch(token, kind, ns, name, version, WATCH_SECONDS):
                if event.get("type") == "ERROR":
                    obj = await api.get(token, kind, ns, name)
                    await send(obj)
                    break
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                obj.setdefault("kind", kind)
                await send(obj)
                if (obj.get("status") or {}).get("phase") in TERMINAL:
                    break
    except (ApiError, ConnectionResetError, asyncio.CancelledError):
        pass
    return response


async def run_log(request: web.Request) -> web.StreamResponse:
    """A ScriptRun's stored log (masked, bounded, kept after its pod is gone; refreshed by the operator while
    the run runs), read as the caller: never the raw pod log, which holds whatever secret a script printed.
    `X-Kubemill-Log-Final: true` once nothing more will be added (the UI stops polling)."""
    api, token = request.app[API], caller_token(request)
    ns, name = request.match_info["ns"], request.match_info["name"]
    try:
        run = await api.get(token, "ScriptRun", ns, name)
    except ApiError as exc:
        return api_error(exc)
    try:
        config_map = await api.get(token, "ConfigMap", ns, runlogs.log_configmap_name(name), "v1")
        stored = runlogs.read_log_configmap(config_map)
    except ApiError as exc:
        if exc.status != 404:
            return api_error(exc)
        stored = runlogs.StoredLog("")  # none yet (no pod so far), or none ever (the run never started one)
    finished = (run.get("status") or {}).get("phase") in TERMINAL
    return web.Response(
        text=stored.text,
        content_type="text/plain",
        headers={
            "Cache-Control": "no-cache",
            "X-Kubemill-Log-Final": "true" if stored.final or (finished and not stored.text) else "false",
        },
    )


async def decide(request: web.Request) -> web.StreamResponse:
    """Approve or reject a suspended step: the same annotation patch as `kubectl annotate`, as the caller,
    so the approval admission webhook sees who asks and may refuse (its message is passed on)."""
    token = caller_token(request)
    try:
        body: dict[str, Any] = await request.json()
    except ValueError:
        return refuse(400, "the body must be JSON: {step, decision, comment, payload}")
    step, decision = body.get("step"), body.get("decision")
    if not isinstance(step, str) or not step or decision not in ("approve", "reject"):
        return refuse(400, "give a step id and a decision of approve or reject")
    annotations: dict[str, str | None] = {
        APPROVE: step if decision == "approve" else None,
        REJECT: step if decision == "reject" else None,
        COMMENT: str(body["comment"]) if body.get("comment") else None,
        PAYLOAD: json.dumps(body["payload"]) if body.get("payload") is not None else None,
    }
    try:
        patched = await request.app[API].merge_patch(
            token,
            "FlowRun",
            request.match_info["ns"],
            request.match_info["name"],
            {"metadata": {"annotations": annotations}},
        )
    except ApiError as exc:
        return api_error(exc)
    return web.json_response(patched)


def routes() -> list[web.RouteDef]:
    base = "/api/ui/ns/{ns}/{plural}"
    return [
        web.get("/api/ui/whoami", whoami),
        web.get("/api/ui/namespaces", namespaces),
        web.get(base, list_objects),
        web.get(base + "/{name}", get_object),
        web.get(base + "/{name}/watch", watch_object),
        web.get("/api/ui/ns/{ns}/scriptruns/{name}/log", run_log),
        web.post("/api/ui/ns/{ns}/flowruns/{name}/decision", decide),
    ]
