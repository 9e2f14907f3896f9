"""Flow and FlowRun handlers: a Flow's `Ready` condition, and each FlowRun's events handed to the process's
`flowrun_reconciler.FlowRunReconciler` (in `runtime.Operator`, from Kopf's memo).

Kopf's `on.event` handlers are used (no progress annotations, no extra writes): the reconcile is idempotent,
so an event seen twice costs a few reads and nothing else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
import pydantic

from kubemill.engine import validate_flow
from kubemill.k8s.api import KubeApi
from kubemill.k8s.flowruns import PARENT_UID_LABEL
from kubemill.models.common import API_VERSION, Condition
from kubemill.models.openflow import OpenFlow, PathFlow
from kubemill.operator import flow_pin
from kubemill.operator.runtime import of

GROUP, VERSION = API_VERSION.split("/")


# --- FlowRuns ----------------------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "flowruns")
def flowrun_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    of(memo).flowruns.on_flowrun(type, dict(body))


@kopf.on.event(GROUP, VERSION, "scriptruns", labels={PARENT_UID_LABEL: kopf.PRESENT})
def child_scriptrun_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    of(memo).flowruns.on_child(type, dict(body))


@kopf.on.startup()
def react_at_once(settings: kopf.OperatorSettings, **_: Any) -> None:
    """A child's final phase should start the next step within milliseconds: Kopf's default 0.1 s batching
    window (waiting for more events of an object before handling it) would be most of a step transition."""
    settings.batching.batch_window = min(settings.batching.batch_window, 0.005)


# --- Flow readiness ----------------------------------------------------------------------------------------


def _paths(api: KubeApi, namespace: str, kind: str) -> set[str]:
    return {
        str(item["spec"]["path"])
        for item in api.list(API_VERSION, kind, namespace)
        if isinstance(item.get("spec"), dict) and item["spec"].get("path")
    }


def flow_conditions(body: dict[str, Any], api: KubeApi) -> dict[str, Any]:
    """The Flow's status: `Ready` (problems named by step id) and the paths it references."""
    namespace = body["metadata"]["namespace"]
    spec = dict(body.get("spec") or {})
    spec.pop("path", None)
    scripts_listed = api.list(API_VERSION, "Script", namespace)
    problems = validate_flow(
        spec,
        _paths(api, namespace, "Script"),
        _paths(api, namespace, "Flow"),
        script_params=flow_pin.script_params(scripts_listed),
        script_languages={
            str(s["spec"]["path"]): str(s["spec"].get("language"))
            for s in scripts_listed
            if isinstance((s.get("spec") or {}).get("path"), str)
        },
    )
    scripts: list[str] = []
    flows: list[str] = []
    try:
        parsed = OpenFlow.model_validate(spec)
        for module in parsed.value.all_modules():
            path = getattr(module.value, "path", None)
            if isinstance(path, str):
                (flows if isinstance(module.value, PathFlow) else scripts).append(path)
    except pydantic.ValidationError:
        pass
    if problems:
        message = "; ".join(f"step {p.step_id}: {p.message}" if p.step_id else p.message for p in problems)
        ready = ("False", "InvalidFlow", message[:32000])
    else:
        ready = ("True", "Valid", "every step is valid and every script and flow it names exists")
    return {"ready": ready, "scripts": sorted(set(scripts)), "flows": sorted(set(flows))}


def reconcile_flow(api: KubeApi, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    found = flow_conditions(body, api)
    status = body.get("status") or {}
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    status_, reason, message = found["ready"]
    same = old is not None and (old.get("status"), old.get("reason"), old.get("message")) == found["ready"]
    generation = meta.get("generation")
    if (
        same
        and status.get("observedGeneration") == generation
        and status.get("scripts", []) == found["scripts"]
    ):
        return
    condition = Condition(
        type="Ready",
        status=status_,
        reason=reason,
        message=message,
        last_transition_time=datetime.now(UTC),
        observed_generation=generation,
    ).to_manifest()
    if same and old is not None:
        condition["lastTransitionTime"] = old["lastTransitionTime"]
    patch = {
        "status": {
            "observedGeneration": generation,
            "conditions": [condition],
            "scripts": found["scripts"],
            "flows": found["flows"],
        }
    }
    api.patch(API_VERSION, "Flow", meta["namespace"], meta["name"], patch, status=True)


@kopf.on.event(GROUP, VERSION, "flows")
def flow_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op, raw = of(memo), dict(body)
    op.flowruns.on_flow(type, raw)
    if type != "DELETED":
        reconcile_flow(op.kube, raw)


@kopf.on.event(GROUP, VERSION, "scripts")
def script_event_for_flows(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A Script appeared or went away: the Flows of its namespace may have become (un)ready."""
    if type not in ("ADDED", "DELETED"):
        return
    api = of(memo).kube
    for flow in api.list(API_VERSION, "Flow", body["metadata"]["namespace"]):
        reconcile_flow(api, flow)
