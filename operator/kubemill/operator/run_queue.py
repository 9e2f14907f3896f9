"""One reconcile at a time per FlowRun, triggers coalesced, wake-ups on a timer.

A run is triggered by its own events, by each child finishing and by the engine's `RequeueAfter`; these come
from different Kopf workers and threads at once. `RunQueue` runs the reconcile in the triggering thread under
a lock per run, and a trigger that arrives while one is waiting for that lock is dropped (the waiting one will
read everything fresh), so triggers never pile up. A Conflict (the run changed while being reconciled) means
read again at once; other failures retry after a few seconds. Wake-ups use the operator's `Requeue` (one
thread and a heap; an earlier wake-up wins, an extra one costs an idempotent reconcile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable

from kubemill.errors import Conflict, KubemillError
from kubemill.operator import metrics
from kubemill.operator.requeue import Requeue

log = logging.getLogger("kubemill.flows")
RETRY_SECONDS = 5.0

Work = Callable[[str, str], float | None]
"""Reconcile (namespace, name); returns when to look again, in seconds, or None."""


class RunQueue:
    """Serialises reconciles of each run and coalesces triggers that arrive meanwhile."""

    def __init__(self, work: Work, on_conflict: Callable[[str, str], object] | None = None) -> None:
        self._work = work
        self._on_conflict = on_conflict
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._queued: set[tuple[str, str]] = set()
        self._requeue: Requeue | None = None

    def trigger(self, namespace: str, name: str) -> None:
        """Reconcile the run now (in the calling thread) unless a reconcile is already queued for it."""
        key = (namespace, name)
        with self._guard:
            if key in self._queued:
                return
            self._queued.add(key)
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                self._queued.discard(key)
            requeue = self._run(namespace, name)
        if requeue is not None:
            self.after(namespace, name, requeue)

    def _run(self, namespace: str, name: str) -> float | None:
        for _ in range(3):
            try:
                return self._work(namespace, name)
            except Conflict:
                if self._on_conflict is not None:
                    self._on_conflict(namespace, name)
                continue  # the run changed while we looked at it: read it again
            except KubemillError as exc:
                metrics.RECONCILE_ERRORS.labels("FlowRun", type(exc).__name__).inc()
                log.warning("flowrun %s/%s: %s; retrying in %g s", namespace, name, exc, RETRY_SECONDS)
                return RETRY_SECONDS
            except Exception as exc:
                metrics.RECONCILE_ERRORS.labels("FlowRun", type(exc).__name__).inc()
                log.exception(
                    "reconciling flowrun %s/%s failed; retrying in %g s", namespace, name, RETRY_SECONDS
                )
                return RETRY_SECONDS
        return 1.0

    def after(self, namespace: str, name: str, seconds: float) -> None:
        """Reconcile again in `seconds`."""
        with self._guard:
            if self._requeue is None:
                self._requeue = Requeue(self._wake)
            requeue = self._requeue
        requeue.after((namespace, name), seconds)

    def _wake(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        self.trigger(*key)

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)
