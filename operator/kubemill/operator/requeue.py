"""Wake-ups at a time: "reconcile this run again in 5 s" without a Kopf timer per object.

Kopf timers and daemons cost a task per object, for every object, finished or not; a run needs a wake-up only
while it waits (a retry delay, a free concurrency slot, a script that may appear). One thread and one heap
serve them all. Nothing here is persisted: after a restart every run is reconciled from its stored status,
which recomputes the wake-ups it needs.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class Requeue:
    """Call `callback(key)` once per key, no earlier than asked (an earlier request wins over a later one)."""

    def __init__(self, callback: Callable[[Hashable], None], clock: Callable[[], float] = time.monotonic):
        self._callback = callback
        self._clock = clock
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="kubemill-requeue", daemon=True)
        self._thread.start()

    def after(self, key: Hashable, seconds: float) -> None:
        due = self._clock() + max(seconds, 0.0)
        with self._cond:
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._counter), key))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._due)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self._clock()
                    if self._heap and self._heap[0][0] <= now:
                        due, _, key = heapq.heappop(self._heap)
                        if self._due.get(key) == due:
                            del self._due[key]
                            break
                        continue
                    self._cond.wait(timeout=(self._heap[0][0] - now) if self._heap else None)
                if self._stopped:
                    return
            try:
                self._callback(key)
            except Exception:
                log.exception("requeued reconcile of %s failed", key)
