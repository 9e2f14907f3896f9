"""What one operator process remembers of FlowRuns between events (see `flowrun_reconciler`)."""

from __future__ import annotations

import threading
from typing import Any

from kubemill.models.openflow import OpenFlow


class Observed:
    """What this process saw last, to spare reads on the path from a child finishing to the next child:
    the versions it wrote itself (the watch event of its own write is not a trigger), the latest body of
    each FlowRun (from its events and from our own writes; a stale one makes the status write fail with a
    Conflict, and the run is read again) and of each Flow by path."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], str] = {}
        self.child_phase: dict[str, str] = {}
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.flows: dict[tuple[str, str], dict[str, Any]] = {}
        self.children: dict[str, dict[str, dict[str, Any]]] = {}
        """Children by parent uid and name, once listed."""
        self.snapshots: dict[str, OpenFlow] = {}
        """Pinned flows read from snapshots, by run uid."""
        self.lock = threading.Lock()
