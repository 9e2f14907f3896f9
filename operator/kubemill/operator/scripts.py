"""Kopf handlers for Scripts and ScriptRuns (and the Jobs and Pods that run them): thin adapters.

A Script event refreshes the script catalog and writes the Script's status (schema derived from `main`,
content hash, `Ready` naming the line of a syntax error, or `PathConflict` when an older Script keeps its
path) and its content-addressed code ConfigMap. Every
ScriptRun, Job and Pod event of a run hands the run to the executor (`run_executor.RunExecutor`, held by the
`runtime.Operator` every handler gets through Kopf's memo), which
decides with the pure `kubemill.engine.scriptrun` and acts through the one API client. Watching events (not
Kopf's change handlers) keeps Kopf's own bookkeeping off the runs: no annotations, no finalizers, no extra
writes between a ScriptRun's creation and its Job; after a restart the initial listing re-delivers every
object, which is all the resumption a level-triggered reconcile needs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kopf
import pydantic

from kubemill import constants
from kubemill.errors import Conflict, KubemillError
from kubemill.k8s import builders
from kubemill.models.scripts import Script
from kubemill.operator import metrics
from kubemill.operator.runtime import Operator, of
from kubemill.operator.script_catalog import identity_of
from kubemill.signatures import SignatureError

log = logging.getLogger(__name__)
GROUP, VERSION = constants.GROUP, constants.VERSION
RUN_LABELS = {builders.LABEL_RUN_UID: kopf.PRESENT}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Scripts -----------------------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, "scripts")
def script_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op = of(memo)
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    if type == "DELETED":
        others = op.catalog.remove(namespace, name)
    else:
        try:
            script = Script.model_validate(dict(body))
        except pydantic.ValidationError as exc:
            log.warning("Script %s/%s does not parse: %s", namespace, name, exc)
            return
        others = op.catalog.put(script)
        _write_status(op, script, dict(body))
    for other in others:  # it took a path over, or lost it to an older Script: its Ready changes
        fresh = op.kube.get_or_none(f"{GROUP}/{VERSION}", "Script", namespace, other.metadata.name or "")
        if fresh is not None:
            _write_status(op, Script.model_validate(fresh), fresh)


def _write_status(op: Operator, script: Script, body: dict[str, Any]) -> None:
    """The Script's status: its schema and content hash, and Ready (a syntax error, content not found, or a
    path another Script keeps)."""
    cat = op.catalog
    namespace, name = script.metadata.namespace or "", script.metadata.name or ""
    digest = schema = problem = None
    try:
        target = cat.target_of_script(script)
        digest, schema = target.content_hash, target.schema
        cat.ensure_code(namespace, target, identity_of(script))  # its own code, even on a path it lost
    except SignatureError as exc:
        problem = ("SyntaxError", str(exc))
    except (KeyError, LookupError) as exc:
        problem = ("ContentNotFound", str(exc).strip("'\""))
    except KubemillError as exc:
        problem = ("ContentNotFound", str(exc))
    keeper = cat.kept_by(script)
    if keeper is not None and problem is None:
        problem = (
            "PathConflict",
            f"Script {keeper.metadata.name} has spec.path {script.spec.path} too and was created first: runs "
            f"of {script.spec.path} run its code, not this Script's. Give this Script another spec.path, or "
            f"delete one of the two",
        )
    current: dict[str, Any] | None = body
    for _attempt in range(3):
        if current is None or current["metadata"].get("generation") != script.metadata.generation:
            return  # deleted or changed since: its own event writes the status
        old = dict(current.get("status") or {})
        new = builders.build_script_status(
            script.metadata.generation, digest, schema, problem, old.get("conditions") or [], _now()
        )
        if new == old:
            return
        try:
            op.kube.replace({**current, "status": new}, status=True)
            return
        except Conflict:  # something else changed the Script (metadata): write on the fresh body
            current = op.kube.get_or_none(f"{GROUP}/{VERSION}", "Script", namespace, name)
        except KubemillError as exc:
            metrics.RECONCILE_ERRORS.labels("Script", exc.__class__.__name__).inc()
            return


# --- ScriptRuns and what runs them -------------------------------------------------------------------------


def _reconcile(op: Operator, namespace: str, name: str, body: Any = None, pod: Any = None) -> None:
    ex = op.executor
    try:
        ex.reconcile(namespace, name, body, pod)
    except Exception as exc:
        metrics.RECONCILE_ERRORS.labels("ScriptRun", type(exc).__name__).inc()
        log.exception("reconcile of scriptrun %s/%s failed; retrying in 2s", namespace, name)
        ex.requeue_after((namespace, name), 2.0)


@kopf.on.event(GROUP, VERSION, "scriptruns")
def scriptrun_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op = of(memo)
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    if type == "DELETED":
        op.executor.forget(namespace, name)
        return
    _reconcile(op, namespace, name, dict(body))


@kopf.on.event("batch", "v1", "jobs", labels=RUN_LABELS)
def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    op = of(memo)
    namespace = body.metadata.namespace or ""
    run = body.metadata.annotations.get(builders.ANNOTATION_RUN)
    if run:
        _reconcile(op, namespace, run)
        if type != "DELETED":
            op.executor.collect_job(namespace, run, body.metadata.name or "")


@kopf.on.event("", "v1", "pods", labels=RUN_LABELS)
def pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    namespace = body.metadata.namespace or ""
    run = body.metadata.annotations.get(builders.ANNOTATION_RUN)
    if run and type != "DELETED":
        _reconcile(of(memo), namespace, run, pod=dict(body))
