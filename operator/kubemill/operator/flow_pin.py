"""What a FlowRun's reconcile reads and checks, as functions of the API client: the Flow a run is pinned to
(its snapshot, its subflow depth, a retry's seed), whether it may start (`concurrent_limit`), the namespace's
`cache_ttl` results, and whether a child found under a step's name is the one the step asked for.

They hold no state: `flowrun_reconciler.FlowRunReconciler` keeps what a process remembers between events.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pydantic

from kubemill import constants
from kubemill.engine import CacheEntry, CreateRun, StoreCache, restart
from kubemill.engine.state import RunError
from kubemill.engine.validation import field_problems, input_key_problems, unknown_key_problems
from kubemill.errors import NotFound
from kubemill.k8s.api import KubeApi
from kubemill.k8s.flowruns import CACHE_LABEL, SNAPSHOT_KEY, TERMINAL, cache_config_map, cache_entries
from kubemill.models.common import API_VERSION
from kubemill.models.flows import MAX_SUBFLOW_DEPTH, Flow, FlowRun, FlowRunStatus
from kubemill.models.openflow import OpenFlow, PathScript
from kubemill.operator.script_catalog import claim_order

RETRY_OF = constants.ANNOTATION_RETRY_OF
RETRY_FROM = constants.ANNOTATION_RETRY_FROM


def read_result_ref(api: KubeApi, namespace: str) -> Callable[[str, str], Any]:
    def read(name: str, key: str) -> Any:
        config_map = api.get("v1", "ConfigMap", namespace, name)
        text = (config_map.get("data") or {}).get(key)
        return json.loads(text) if text is not None else None

    return read


def read_cache(api: KubeApi, namespace: str, now: datetime) -> dict[str, CacheEntry]:
    """The namespace's live `cache_ttl` results; expired ones are deleted on the way."""
    entries, expired = cache_entries(
        api.list("v1", "ConfigMap", namespace, labels={CACHE_LABEL: "result"}), now
    )
    for name in expired:
        api.delete("v1", "ConfigMap", namespace, name)
    return entries


def store_cache(api: KubeApi, namespace: str, action: StoreCache) -> None:
    """Keep a cached result (a later run of the same key overwrites an older entry)."""
    desired = cache_config_map(namespace, action)
    _, created = api.create(desired, adopt_any=True)
    if not created:
        patch = {"metadata": {"annotations": desired["metadata"]["annotations"]}, "data": desired["data"]}
        api.patch("v1", "ConfigMap", namespace, desired["metadata"]["name"], patch)


def has_slot(api: KubeApi, body: dict[str, Any], flow: OpenFlow, now: datetime) -> bool:
    """Whether a Pending run may start under its flow's `concurrent_limit`: fewer than the limit of the other
    runs of the same flow path are ahead of it (started and not finished, or Pending and created before it;
    with `concurrency_time_window_s`, also those that started within that many seconds, as Windmill counts).
    The order is the same for every reconcile, so two Pending runs reconciled at once never both take the
    last slot."""
    limit = flow.value.concurrent_limit
    if not limit:
        return True
    window = flow.value.concurrency_time_window_s or 0
    meta = body["metadata"]
    mine = (meta.get("creationTimestamp") or "", meta["name"])
    ahead = 0
    for other in api.list(API_VERSION, "FlowRun", meta["namespace"]):
        other_meta, other_status = other["metadata"], other.get("status") or {}
        if other_meta["name"] == meta["name"] or (other.get("spec") or {}).get("flowPath") != body[
            "spec"
        ].get("flowPath"):
            continue
        phase = other_status.get("phase") or "Pending"
        if phase in TERMINAL:
            started_at = other_status.get("startedAt")
            recent = (
                window and started_at and (now - datetime.fromisoformat(started_at)).total_seconds() < window
            )
            ahead += bool(recent)
        elif phase != "Pending" or (other_meta.get("creationTimestamp") or "", other_meta["name"]) < mine:
            ahead += 1
    return ahead < limit


def start_problems(api: KubeApi, namespace: str, flow: OpenFlow) -> RunError | None:
    """What the Flow's Ready condition would say, checked again as the run starts (the condition may not be
    written yet, or a Script may have changed since): refused fields, unknown keys, input_transforms keys
    that name no parameter of the step's script, with the condition's message."""
    uses_scripts = any(isinstance(m.value, PathScript) for m in flow.value.all_modules())
    params = script_params(api.list(API_VERSION, "Script", namespace)) if uses_scripts else None
    problems = field_problems(flow) + unknown_key_problems(flow) + input_key_problems(flow, params)
    if not problems:
        return None
    said = "; ".join(f"step {p.step_id}: {p.message}" if p.step_id else p.message for p in problems)
    return RunError(name="InvalidFlow", message=said)


def retry_seed(api: KubeApi, run: FlowRun, flow: OpenFlow, digest: str) -> dict[str, Any] | RunError:
    """A retry from the failed step (`kubemill.dev/retry-from: failed-step`, `kubemill.dev/retry-of: <run>`):
    the failed run's reusable step records (kubemill.engine.restart) and flow user states."""
    namespace = run.metadata.namespace or ""
    old_name = (run.metadata.annotations or {}).get(RETRY_OF, "")
    old_body = api.get_or_none(API_VERSION, "FlowRun", namespace, old_name) if old_name else None
    old = FlowRun.model_validate(old_body) if old_body is not None else None
    why = "it does not exist" if old is None else restart.problem_with(old, run, digest)
    if why is not None or old is None:
        return RunError(
            name="RetryNotPossible",
            message=f"{RETRY_FROM}: flowrun {old_name or '(no kubemill.dev/retry-of)'} cannot be retried "
            f"from its failed step: {why}; retry it from the start instead",
        )
    old_status = old.status or FlowRunStatus()
    return {"steps": restart.reusable_steps(flow, old_status), "user_states": dict(old_status.user_states)}


def parse_flow(body: dict[str, Any]) -> OpenFlow | None:
    try:
        return Flow.model_validate(body).spec.openflow()
    except pydantic.ValidationError:
        return None


def snapshot(api: KubeApi, namespace: str, name: str, digest: str) -> OpenFlow | RunError:
    """The pinned document from its ConfigMap, checked against the hash in the status."""
    lost = RunError(
        name="FlowChanged",
        message=f"the Flow changed since this run started and its snapshot {name} is gone or altered; "
        "create a new run to run the current Flow",
    )
    try:
        config_map = api.get("v1", "ConfigMap", namespace, name)
    except NotFound:
        return lost
    text = (config_map.get("data") or {}).get(SNAPSHOT_KEY) or ""
    if hashlib.sha256(text.encode()).hexdigest() != digest:
        return lost
    return OpenFlow.model_validate(json.loads(text))


def depth_of(api: KubeApi, body: dict[str, Any]) -> int:
    """0 for a run no flow started; else the length of its chain of parent FlowRuns, walked through the
    controller references (each parent checked by uid), so it does not depend on a parent's status having been
    written yet. A run cannot make itself shallower than the chain it is in (it can only lie itself deeper);
    the walk stops one past the limit."""
    depth, current = 0, body
    while depth <= MAX_SUBFLOW_DEPTH:
        ref = next(
            (
                r
                for r in current["metadata"].get("ownerReferences") or []
                if r.get("kind") == "FlowRun" and r.get("controller")
            ),
            None,
        )
        if ref is None:
            break
        parent = api.get_or_none(API_VERSION, "FlowRun", body["metadata"]["namespace"], ref["name"])
        if parent is None or parent["metadata"].get("uid") != ref.get("uid"):
            break
        known = (parent.get("status") or {}).get("depth")
        if isinstance(known, int) and (parent.get("status") or {}).get("flow"):
            return depth + known + 1  # a pinned parent already knows its own depth
        depth, current = depth + 1, parent
    return depth


def is_our_child(found: dict[str, Any], manifest: dict[str, Any], parent_uid: str) -> bool:
    owners = found["metadata"].get("ownerReferences") or []
    spec = found.get("spec") or {}
    return any(o.get("uid") == parent_uid and o.get("controller") for o in owners) and all(
        spec.get(k) == v for k, v in manifest["spec"].items()
    )


def child_conflict(action: CreateRun) -> RunError:
    return RunError(
        name="ChildConflict",
        message=f"step {action.step}: a {action.kind} named {action.name} already exists and is not the run "
        "this step starts (someone else created it); the flow stops rather than adopt it",
    )


def flow_failure(flow_body: dict[str, Any] | None, path: str) -> RunError | None:
    """Why the run cannot start with this flow, or None."""
    if flow_body is None:
        return RunError(name="FlowNotFound", message=f"no Flow with path {path} in this namespace")
    try:
        flow = Flow.model_validate(flow_body)
    except pydantic.ValidationError as exc:
        return RunError(name="FlowNotReady", message=f"flow {path} does not parse: {exc.errors()[0]['msg']}")
    ready = next((c for c in (flow.status.conditions if flow.status else ()) if c.type == "Ready"), None)
    if ready is not None and ready.status == "False":
        return RunError(name="FlowNotReady", message=f"flow {path} is not ready: {ready.message}")
    return None


def script_params(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each Script's parameter names, from the schema its status reports (Scripts not derived yet are left
    out, so their steps' input keys are not checked). Of two Scripts with one path, the one that keeps it
    (script_catalog.claim_order) is the one read."""
    found: dict[str, list[str]] = {}

    def rank(item: dict[str, Any]) -> tuple[str, str]:
        return claim_order(item["metadata"].get("creationTimestamp"), item["metadata"].get("name"))

    for item in sorted(items, key=rank, reverse=True):  # the keeper last, so that it is the one kept
        path = (item.get("spec") or {}).get("path")
        schema = (item.get("status") or {}).get("schema")
        if isinstance(path, str) and isinstance(schema, dict) and isinstance(schema.get("properties"), dict):
            found[path] = list(schema["properties"])
    return found
