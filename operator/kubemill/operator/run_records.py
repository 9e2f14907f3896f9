"""What the ScriptRun executor remembers of each run between events: its script, phase, creation and finish
times. Concurrency limits count the running ones, a finished run wakes the pending ones, a script's history
limit deletes the oldest finished ones, and the active-runs gauge follows every move into and out of Running.
Nothing here is persisted: after a restart the records fill again from Kopf's listing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from kubemill import constants
from kubemill.models.scripts import ScriptRun
from kubemill.operator import metrics

RunKey = tuple[str, str]
TERMINAL = constants.TERMINAL_PHASES
FLOW_RUN_LABEL = constants.LABEL_FLOW_RUN_UID


@dataclass
class RunRecord:
    script_path: str
    phase: str
    created: str
    finished: str = ""
    kept_by_parent: bool = False  # a flow's step: the FlowRun, not the script's history, decides


class RunRecords:
    """The records of one executor, safe to use from any thread."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._runs: dict[RunKey, RunRecord] = {}

    def __len__(self) -> int:
        with self._guard:
            return len(self._runs)

    def keys(self) -> set[RunKey]:
        with self._guard:
            return set(self._runs)

    def remember(self, key: RunKey, run: ScriptRun, phase: str) -> None:
        """The run as an event or a read shows it."""
        created = run.metadata.creation_timestamp or ""
        finished = run.status.finished_at if run.status is not None else None
        with self._guard:
            record = self._runs.get(key)
            if record is None:
                record = self._runs[key] = RunRecord(
                    run.spec.script_path or "",
                    "",
                    created,
                    kept_by_parent=bool(run.spec.flow_run or (run.metadata.labels or {}).get(FLOW_RUN_LABEL)),
                )
            _set_phase(key, record, phase)
            if finished is not None and not record.finished:
                record.finished = finished.strftime("%Y-%m-%dT%H:%M:%SZ")

    def moved(self, key: RunKey, phase: str, finished: str = "") -> None:
        """This process wrote the run into `phase` (and, once final, its finish time)."""
        with self._guard:
            record = self._runs.get(key)
            if record is not None:
                _set_phase(key, record, phase)
                if finished:
                    record.finished = finished

    def drop(self, key: RunKey) -> None:
        with self._guard:
            record = self._runs.pop(key, None)
            if record is not None:
                _set_phase(key, record, "")

    def running_besides(self, key: RunKey, path: str) -> int:
        """How many other runs of the script at `path`, in the run's namespace, are Running."""
        with self._guard:
            return sum(
                1
                for k, r in self._runs.items()
                if k != key and k[0] == key[0] and r.script_path == path and r.phase == "Running"
            )

    def pending(self, namespace: str, path: str) -> list[RunKey]:
        """The script's Pending runs, oldest first."""
        with self._guard:
            waiting = sorted(
                (r.created, k)
                for k, r in self._runs.items()
                if k[0] == namespace and r.script_path == path and r.phase == "Pending"
            )
        return [k for _, k in waiting]

    def beyond_history(self, namespace: str, path: str, limit: int) -> list[RunKey]:
        """The script's finished runs (not flow steps) beyond the newest `limit`, oldest first."""
        with self._guard:
            finished = sorted(
                (r.finished, k)
                for k, r in self._runs.items()
                if k[0] == namespace
                and r.script_path == path
                and r.phase in TERMINAL
                and r.finished
                and not r.kept_by_parent
            )
        return [k for _, k in finished[: max(len(finished) - limit, 0)]]


def _set_phase(key: RunKey, record: RunRecord, phase: str) -> None:
    """Record a phase; the active-runs gauge follows every move into and out of Running, however the
    operator learned of it (its own write, or a run already running when it started)."""
    if record.phase != "Running" and phase == "Running":
        metrics.ACTIVE_RUNS.labels(key[0]).inc()
    elif record.phase == "Running" and phase != "Running":
        metrics.ACTIVE_RUNS.labels(key[0]).dec()
    record.phase = phase
