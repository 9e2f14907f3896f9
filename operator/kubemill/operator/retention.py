"""Deletes finished runs past their namespace's retention (kubemill.k8s.retention), every
`--retention-interval` seconds, in a thread of its own. A deleted run takes its children, stored log,
result and Secret with it (owner references: the API server's garbage collector does the rest)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import kopf

from kubemill import constants
from kubemill.errors import KubemillError
from kubemill.k8s import retention
from kubemill.operator.runtime import Operator, of

log = logging.getLogger("kubemill.retention")
API = constants.API_VERSION


def sweep(op: Operator, now: datetime | None = None) -> list[tuple[str, str, str]]:
    """One pass over every namespace's finished runs; returns (namespace, kind, name) of those deleted."""
    api, settings = op.kube, op.settings
    now = now or datetime.now(UTC)
    by_namespace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for kind in ("ScriptRun", "FlowRun"):
        for item in api.list(API, kind, None):
            item.setdefault("kind", kind)
            by_namespace[item["metadata"]["namespace"]].append(item)
    deleted = []
    for namespace, runs in by_namespace.items():
        ns = api.get_or_none("v1", "Namespace", None, namespace)
        policy = retention.policy_for(
            ((ns or {}).get("metadata") or {}).get("annotations"), settings.retention
        )
        for problem in policy.problems:
            if (namespace, problem) not in op.warned:
                op.warned.add((namespace, problem))
                log.warning("namespace %s: %s", namespace, problem)
        if not policy.active:
            continue
        for kind, name in retention.expired(runs, policy, now):
            if api.delete(API, kind, namespace, name, propagation="Background"):
                deleted.append((namespace, kind, name))
                log.info("retention: deleted %s %s/%s", kind, namespace, name)
    return deleted


def _loop(op: Operator) -> None:
    interval = op.settings.retention_interval
    while not op.stopping.wait(interval):
        try:
            sweep(op)
        except KubemillError as exc:
            log.warning("retention sweep failed (next in %ss): %s", interval, exc)
        except Exception:
            log.exception("retention sweep failed")


@kopf.on.startup()
def start_retention(memo: kopf.Memo, **_: Any) -> None:
    op = of(memo)
    if op.settings.retention_interval > 0:
        threading.Thread(target=_loop, args=(op,), name="kubemill-retention", daemon=True).start()


@kopf.on.cleanup()
def stop_retention(memo: kopf.Memo, **_: Any) -> None:
    of(memo).stopping.set()
