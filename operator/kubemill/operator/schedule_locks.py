"""What the Schedule handlers share within one operator process (see `schedules`)."""

from __future__ import annotations

import threading


class ScheduleLocks:
    """One lock per Schedule (its reconcile and the records of its runs never interleave) and the namespaces
    whose trigger identity exists; one per operator process (`runtime.Operator.schedules`)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self.identities: set[str] = set()

    def of(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())
