"""The operator's one work queue: every run's reconcile, one at a time per run, triggers coalesced, re-adds
on a timer.

Both run kinds go through it, keyed by (kind, namespace, name). A reconcile runs in the thread that
triggered it (a Kopf handler's, or one of the queue's threads for a re-add that came due) under the run's
lock. A trigger that arrives while another waits for that lock is dropped: the waiting one reads everything
fresh, so triggers never pile up. An event's reconcile that decides on the body the event carries (the
ScriptRuns') takes the same lock with `holding`. A re-add (`after`) waits on one timer thread (`Requeue`: an
earlier wake-up wins over a later one, an extra one costs an idempotent reconcile), then runs on the queue's
threads. A Conflict from a reconcile means read again at once (three times at most); any other failure is
counted in `kubemill_reconcile_errors_total` and retried after `RETRY_SECONDS`. Nothing here is persisted:
after a restart Kopf lists every run again and each reconcile recomputes the wake-ups it needs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from kubemill.errors import Conflict, KubemillError
from kubemill.operator import metrics
from kubemill.operator.requeue import Requeue

log = logging.getLogger("kubemill.queue")
RETRY_SECONDS = 5.0
CONFLICT_READS = 3

Key = tuple[str, str, str]
"""(kind, namespace, name)"""
Work = Callable[[str, str], float | None]
"""Reconcile (namespace, name) of one kind; returns when to look again, in seconds, or None."""


class Timer(Protocol):
    """When re-adds come due (`Requeue`; tests hand in one they drive themselves)."""

    def after(self, key: Hashable, seconds: float) -> None: ...
    def pending(self) -> int: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class _Kind:
    work: Work
    on_conflict: Callable[[str, str], object] | None


class WorkQueue:
    """Serialises reconciles of each run, coalesces triggers that arrive meanwhile, and re-adds runs later."""

    def __init__(self, workers: int = 8, timer: Timer | None = None) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Key, threading.RLock] = {}
        self._queued: set[Key] = set()
        self._kinds: dict[str, _Kind] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kubemill-requeued")
        self.timer: Timer = timer if timer is not None else Requeue(self._due)

    def register(
        self, kind: str, work: Work, on_conflict: Callable[[str, str], object] | None = None
    ) -> None:
        """What `trigger` and a due re-add run for runs of `kind`; `on_conflict` before each read again."""
        with self._guard:
            self._kinds[kind] = _Kind(work, on_conflict)

    def trigger(self, kind: str, namespace: str, name: str) -> None:
        """Reconcile the run now (in the calling thread) unless a reconcile is already waiting for it."""
        key = (kind, namespace, name)
        with self._guard:
            registered = self._kinds.get(kind)
            if registered is None:
                raise KeyError(f"the work queue has no reconcile for {kind!r}")
            if key in self._queued:
                return
            self._queued.add(key)
            lock = self._locks.setdefault(key, threading.RLock())
        with lock:
            with self._guard:
                self._queued.discard(key)
            again = self._run(kind, registered, namespace, name)
        if again is not None:
            self.after(kind, namespace, name, again)

    @contextlib.contextmanager
    def holding(self, kind: str, namespace: str, name: str) -> Iterator[None]:
        """The run's lock, for a reconcile that does not go through `trigger` (reentrant: a reconcile
        `trigger` runs may take it again)."""
        with self._guard:
            lock = self._locks.setdefault((kind, namespace, name), threading.RLock())
        with lock:
            yield

    def after(self, kind: str, namespace: str, name: str, seconds: float) -> None:
        """Reconcile the run again in `seconds` (through `trigger`, on one of the queue's threads)."""
        self.timer.after((kind, namespace, name), seconds)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """The run is gone: drop its lock (a re-add still due finds it gone and reads nothing more)."""
        with self._guard:
            self._locks.pop((kind, namespace, name), None)

    def sizes(self, kind: str) -> dict[str, int]:
        """How many runs of `kind` have a lock here, and how many re-adds of any kind are due."""
        with self._guard:
            locks = sum(1 for k in self._locks if k[0] == kind)
        return {"locks": locks, "requeued": self.timer.pending()}

    def stop(self) -> None:
        self.timer.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _due(self, key: Hashable) -> None:
        assert isinstance(key, tuple)  # the queue only re-adds its own Keys
        kind, namespace, name = key
        self._pool.submit(self._trigger_logged, kind, namespace, name)

    def _trigger_logged(self, kind: str, namespace: str, name: str) -> None:
        try:
            self.trigger(kind, namespace, name)
        except Exception:  # a thread of the pool has nobody to raise to
            log.exception("re-added reconcile of %s %s/%s failed", kind, namespace, name)

    def _run(self, kind: str, registered: _Kind, namespace: str, name: str) -> float | None:
        for _ in range(CONFLICT_READS):
            try:
                return registered.work(namespace, name)
            except Conflict:
                if registered.on_conflict is not None:
                    registered.on_conflict(namespace, name)
                continue  # the run changed while we looked at it: read it again
            except KubemillError as exc:
                metrics.RECONCILE_ERRORS.labels(kind, type(exc).__name__).inc()
                log.warning("%s %s/%s: %s; retrying in %g s", kind, namespace, name, exc, RETRY_SECONDS)
                return RETRY_SECONDS
            except Exception as exc:
                metrics.RECONCILE_ERRORS.labels(kind, type(exc).__name__).inc()
                log.exception(
                    "reconciling %s %s/%s failed; retrying in %g s", kind, namespace, name, RETRY_SECONDS
                )
                return RETRY_SECONDS
        return 1.0
