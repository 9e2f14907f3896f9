"""Webhook run endpoints: Windmill-compatible `jobs/run` routes, and signed deliveries to HttpTriggers.

`POST /api/w/{namespace}/jobs/run/p/{path}` (a script) and `/jobs/run/f/{path}` (a flow) create a run with
the caller's own Kubernetes bearer token and answer its name; `/jobs/run_wait_result/{p|f}/{path}` also waits
(bounded) for the result. RBAC decides, exactly as for `kubectl create`.

`POST /api/h/{namespace}/{route}` serves HttpTriggers, for callers that cannot hold a token: the delivery is
checked against the trigger's signing key (`kubemill.ui.signing`), size and rate limits, then the run is
created under the trigger server's own narrow identity, named from the delivery so a replay creates nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import JsonValue, ValidationError

from kubemill import constants
from kubemill.models.common import API_VERSION
from kubemill.models.triggers import HttpTrigger
from kubemill.signatures import PREPROCESSOR_LANGUAGES, preprocessor_schema
from kubemill.ui.kubeapi import ApiError, Body, KubeApi
from kubemill.ui.signing import Refused, TokenBucket, replay_name, verify

TERMINAL = constants.TERMINAL_PHASES
RUN_KINDS = {"p": ("ScriptRun", "Script", "scriptPath"), "f": ("FlowRun", "Flow", "flowPath")}
TRIGGER_CACHE_SECONDS = 5.0
NOT_AN_OBJECT = "the body must be a JSON object (or set spec.bodyArg to take any body)"

API = web.AppKey("api", KubeApi)


def caller_token(request: web.Request) -> str:
    """The caller's bearer token: `Authorization: Bearer`, a front proxy's `X-Forwarded-Access-Token`, or
    Windmill's `?token=`. Raises 401 when there is none."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer ") and header[7:].strip():
        return header[7:].strip()
    for candidate in (request.headers.get("X-Forwarded-Access-Token"), request.query.get("token")):
        if candidate:
            return candidate
    raise web.HTTPUnauthorized(
        text="a Kubernetes bearer token is required (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": 'Bearer realm="kubemill"'},
    )


def refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"name": "Refused", "message": message}}, status=status)


def api_error(exc: ApiError) -> web.Response:
    """The API server's answer, passed on: its status and its own message (RBAC, admission webhooks)."""
    return web.json_response(
        {"error": {"name": exc.reason or "KubernetesError", "message": exc.message}}, status=exc.status
    )


def run_manifest(
    target: str,
    namespace: str,
    path: str,
    args: Mapping[str, JsonValue],
    *,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    owner: Body | None = None,
) -> Body:
    """The ScriptRun (`target` p) or FlowRun (f) to create: a fixed name, or one generated from the path."""
    kind, _, path_field = RUN_KINDS[target]
    meta: Body = {"namespace": namespace, "labels": dict(labels or {})}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = path.rsplit("/", 1)[-1].replace("_", "-").lower().strip("-.")[:40] + "-"
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": meta,
        "spec": {path_field: path, "args": args},
    }


PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-forwarded-access-token"})
"""Left out of a trigger event (a run's spec is readable by whoever can read the run)."""


def trigger_event(
    kind: str, body: bytes, parsed: JsonValue, query: Mapping[str, str], headers: Mapping[str, str]
) -> dict[str, JsonValue]:
    """Windmill's preprocessor `event` for a webhook or an HTTP route: `kind`, `body` (parsed), `raw_string`,
    `query` and `headers` (credentials left out); goes to the FlowRun's `spec.triggerEvent`."""
    return {
        "kind": kind,
        "body": parsed,
        "raw_string": body.decode("utf-8", errors="replace") if body else None,
        "query": {k: v for k, v in query.items() if k != "token"},  # Windmill's ?token= is a credential
        "headers": {k.lower(): v for k, v in headers.items() if k.lower() not in PRIVATE_HEADERS},
    }


def json_or_text(body: bytes) -> JsonValue:
    try:
        parsed: JsonValue = json.loads(body) if body.strip() else None
    except ValueError:
        return body.decode("utf-8", errors="replace")
    return parsed


def has_preprocessor(definition: Body, target: str) -> bool:
    """A Flow with a `preprocessor_module`, or a Script that may define `preprocessor` (its code inline and
    defining one, or kept in a ConfigMap this server does not read: the operator decides from the code)."""
    spec = definition.get("spec") or {}
    if target == "f":
        return bool((spec.get("value") or {}).get("preprocessor_module"))
    language = str(spec.get("language"))
    if language not in PREPROCESSOR_LANGUAGES:
        return False
    content = spec.get("content")
    return not isinstance(content, str) or preprocessor_schema(language, content) is not None


async def json_args(request: web.Request) -> dict[str, JsonValue]:
    body = await request.read()
    if not body.strip():
        return {}
    try:
        args = json.loads(body)
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be JSON: an object of the run's args") from None
    if not isinstance(args, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object of the run's args")
    return args


async def start_run(request: web.Request) -> tuple[KubeApi, str, Body]:
    """Create the run a `jobs/run*` request asks for, as the caller. Returns (api, token, created run)."""
    api = request.app[API]
    token = caller_token(request)
    namespace, target, path = (request.match_info[k] for k in ("namespace", "target", "path"))
    args = await json_args(request)
    _, definition, _ = RUN_KINDS[target]
    found = await api.list(token, definition, namespace, field_selector=f"spec.path={path}")
    if not found:
        raise web.HTTPNotFound(text=f"no {definition} with path {path} in namespace {namespace}")
    manifest = run_manifest(target, namespace, path, args)
    if has_preprocessor(found[0], target):  # Windmill: a webhook run goes through the preprocessor
        body = await request.read()
        event = trigger_event("webhook", body, args, request.query, request.headers)
        manifest["spec"]["triggerEvent"] = event
    created = await api.create(token, manifest)
    return api, token, created


async def run_async(request: web.Request) -> web.StreamResponse:
    """`jobs/run/{p|f}/{path}`: the new run's name, as plain text (Windmill answers its job id)."""
    try:
        _, _, created = await start_run(request)
    except ApiError as exc:
        return api_error(exc)
    return web.Response(status=201, text=created["metadata"]["name"])


async def run_result(api: KubeApi, token: str, run: Body) -> JsonValue:
    status = run.get("status") or {}
    ref = status.get("resultRef")
    if not ref:
        result: JsonValue = status.get("result")
        return result
    if ref.get("s3"):  # over 1 MiB: Windmill's S3Object for the workspace storage (docs/decisions.md)
        return {"s3": str(ref["s3"])}
    config_map = await api.get(token, "ConfigMap", run["metadata"]["namespace"], ref["name"], "v1")
    value: JsonValue = json.loads((config_map.get("data") or {}).get(ref.get("key", "result.json"), "null"))
    return value


async def wait_finished(api: KubeApi, token: str, run: Body, seconds: float) -> Body | None:
    """The run once its phase is terminal, or None after `seconds`."""
    meta = run["metadata"]
    deadline = time.monotonic() + seconds
    version = meta["resourceVersion"]
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                async for event in api.watch(
                    token, run["kind"], meta["namespace"], meta["name"], version, max(1, math.ceil(left))
                ):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = "0"  # resource version too old: start from the current state
                        break
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if (obj.get("status") or {}).get("phase") in TERMINAL:
                        return dict(obj)
        except TimeoutError:
            return None
    return None


async def run_wait_result(request: web.Request) -> web.StreamResponse:
    """`jobs/run_wait_result/{p|f}/{path}`: the result as JSON (500 with the error when the run failed)."""
    settings = request.app[SETTINGS]
    try:
        wait = min(float(request.query.get("timeout", settings.wait_seconds)), settings.wait_seconds)
        api, token, created = await start_run(request)
        done = await wait_finished(api, token, created, wait)
        name = created["metadata"]["name"]
        if done is None:
            return refuse(408, f"run {name} did not finish within {wait:.0f}s; it goes on running")
        phase = done["status"]["phase"]
        if phase != "Succeeded":
            error = done["status"].get("error") or {"name": phase, "message": f"the run ended {phase}"}
            return web.json_response({"error": error, "run": name}, status=500)
        return web.json_response(await run_result(api, token, done), headers={"X-Kubemill-Run": name})
    except ApiError as exc:
        return api_error(exc)
    except ValueError:
        return refuse(400, "timeout must be a number of seconds")


# --- HttpTriggers ------------------------------------------------------------------------------------


@dataclass
class CachedTrigger:
    trigger: HttpTrigger
    manifest: Body
    key: bytes
    fetched: float
    bucket: TokenBucket | None


@dataclass
class WebhookSettings:
    """What the server was started with: the bounded wait, and whether HttpTriggers are served."""

    wait_seconds: float = 60.0
    triggers: bool = False
    clock: Callable[[], float] = time.time
    cache: dict[tuple[str, str], CachedTrigger] = field(default_factory=dict)
    loading: dict[tuple[str, str], asyncio.Task[CachedTrigger | None]] = field(default_factory=dict)


SETTINGS = web.AppKey("webhook_settings", WebhookSettings)


async def _load_trigger(api: KubeApi, namespace: str, route: str) -> CachedTrigger | None:
    token = api.server.token or ""
    found = await api.list(token, "HttpTrigger", namespace, field_selector=f"spec.route={route}")
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(sorted(t["metadata"]["name"] for t in found))
        raise Refused(409, f"several HttpTriggers claim route {route}: {names}")
    manifest = found[0]
    try:
        trigger = HttpTrigger.model_validate(manifest)
    except ValidationError as exc:
        raise Refused(500, f"HttpTrigger {manifest['metadata']['name']} is malformed: {exc}") from None
    ref = trigger.spec.secret_ref
    secret = await api.get(token, "Secret", namespace, ref.name, "v1")
    encoded = (secret.get("data") or {}).get(ref.key)
    if not encoded:
        raise Refused(
            500, f"HttpTrigger {manifest['metadata']['name']}: Secret {ref.name} has no key {ref.key}"
        )
    limit = trigger.spec.rate_limit
    bucket = (
        TokenBucket(limit.requests_per_second, limit.burst or limit.requests_per_second) if limit else None
    )
    return CachedTrigger(trigger, manifest, base64.b64decode(encoded), time.monotonic(), bucket)


async def find_trigger(app: web.Application, namespace: str, route: str) -> CachedTrigger | None:
    """The trigger for a route, cached for a few seconds; concurrent deliveries share one lookup."""
    settings, key = app[SETTINGS], (namespace, route)
    cached = settings.cache.get(key)
    if cached is not None and time.monotonic() - cached.fetched < TRIGGER_CACHE_SECONDS:
        return cached
    task = settings.loading.get(key)
    if task is None:
        task = asyncio.ensure_future(_load_trigger(app[API], namespace, route))
        settings.loading[key] = task
        task.add_done_callback(lambda _: settings.loading.pop(key, None))
    fresh = await asyncio.shield(task)
    if fresh is not None and cached is not None and cached.bucket is not None and fresh.bucket is not None:
        fresh.bucket = cached.bucket  # the rate limit outlives a cache refresh
    if fresh is None:
        settings.cache.pop(key, None)
    else:
        settings.cache[key] = fresh
    return fresh


async def read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"the body is {request.content_length} bytes; this trigger takes at most {limit}")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over {limit} bytes, the most this trigger takes")
        chunks.append(chunk)
    return b"".join(chunks)


def trigger_args(trigger: HttpTrigger, headers: Mapping[str, str], body: bytes) -> dict[str, JsonValue]:
    """The run's args: the JSON body's keys (or the whole body under `bodyArg`) and the chosen headers."""
    spec = trigger.spec
    try:
        parsed: JsonValue = json.loads(body) if body.strip() else {}
    except ValueError:
        if spec.body_arg is None:
            raise Refused(
                400, "the body must be a JSON object (or set spec.bodyArg to take any body)"
            ) from None
        parsed = body.decode("utf-8", errors="replace")
    if spec.body_arg is not None:
        args: dict[str, JsonValue] = {spec.body_arg: parsed}
    elif isinstance(parsed, dict):
        args = dict(parsed)
    else:
        raise Refused(400, NOT_AN_OBJECT)
    for header in spec.headers:
        args[header.arg] = headers.get(header.name.lower())
    return args


async def deliver(request: web.Request) -> web.StreamResponse:
    """`POST /api/h/{namespace}/{route}`: check the delivery, then create its run, or refuse and create
    nothing."""
    app, settings = request.app, request.app[SETTINGS]
    namespace, route = request.match_info["namespace"], request.match_info["route"]
    if not settings.triggers:
        return refuse(404, "this server does not serve HttpTriggers (start kubemill ui with --triggers)")
    try:
        cached = await find_trigger(app, namespace, route)
        if cached is None:
            return refuse(404, f"no HttpTrigger with route {route} in namespace {namespace}")
        spec = cached.trigger.spec
        body = await read_limited(request, spec.max_body_bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        replay_key = verify(spec.signature, cached.key, headers, body, settings.clock())
        if cached.bucket is not None and (wait := cached.bucket.take(time.monotonic())) > 0:
            return web.json_response(
                {"error": {"name": "Refused", "message": "rate limit exceeded for this trigger"}},
                status=429,
                headers={"Retry-After": str(math.ceil(wait))},
            )
        target = "p" if spec.script_path else "f"
        name = replay_name(cached.manifest["metadata"]["name"], replay_key)
        manifest = run_manifest(
            target,
            namespace,
            spec.script_path or spec.flow_path or "",
            trigger_args(cached.trigger, headers, body),
            name=name,
            labels={"kubemill.dev/http-trigger": cached.manifest["metadata"]["name"]},
            owner=cached.manifest,
        )
        # for the flow's preprocessor_module or the Script's preprocessor, if it has one: this server reads
        # neither Flows nor Scripts, so the operator decides (a run without one ignores the event)
        chosen = {h.name.lower() for h in spec.headers}
        parsed = json_or_text(body)
        event = trigger_event(
            "http", body, parsed, request.query, {k: headers[k] for k in chosen & set(headers)}
        )
        event |= {"route": spec.route, "path": route, "method": request.method, "params": {}}
        manifest["spec"]["triggerEvent"] = event
    except Refused as exc:
        return refuse(exc.status, exc.message)
    except ApiError as exc:
        return api_error(exc)
    try:
        await app[API].create(app[API].server.token or "", manifest)
    except ApiError as exc:
        if exc.status == 409:
            return refuse(409, f"this delivery was already received (run {name}); nothing new was created")
        return api_error(exc)
    return web.json_response({"run": name, "kind": manifest["kind"]}, status=201)


def routes() -> list[web.RouteDef]:
    run = "/api/w/{namespace}/jobs/{verb}/{target:[pf]}/{path:[ufg]/.+}"
    return [
        web.post(run.replace("{verb}", "run"), run_async),
        web.post(run.replace("{verb}", "run_wait_result"), run_wait_result),
        web.post("/api/h/{namespace}/{route:.+}", deliver),
    ]
