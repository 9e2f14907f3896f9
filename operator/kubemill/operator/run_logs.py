"""A ScriptRun's stored log: its attempts' output, masked and bounded, kept in a ConfigMap past its pod.

`kubemill logs` and the UI read the stored log, never the raw pod log. While an attempt runs it is refreshed
every `live_log_seconds` (the first refresh one interval in: most runs are over by then); when an attempt ends
its output is appended. Best effort: a log that cannot be read or written never changes how a run ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubemill.errors import ApiRejected, ApiUnavailable, NotFound, NotOurs
from kubemill.k8s import builders, runlogs
from kubemill.k8s.api import KubeApi
from kubemill.k8s.builders import RunIdentity

log = logging.getLogger(__name__)
RunKey = tuple[str, str]


class StoredLogs:
    """Writes runs' stored logs; one per executor."""

    def __init__(
        self,
        kube: KubeApi,
        masks: Callable[[RunKey], frozenset[str]],
        wake: Callable[[RunKey], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        live_log_seconds: float = 5.0,
    ) -> None:
        self.kube = kube
        self._masks = masks
        self._wake = wake
        self.clock = clock
        self.live_log_seconds = live_log_seconds
        self._guard = threading.Lock()
        self._log_due: dict[RunKey, float] = {}
        self._logs_written: set[RunKey] = set()  # runs whose log ConfigMap this process wrote

    def forget(self, key: RunKey) -> None:
        with self._guard:
            self._log_due.pop(key, None)
            self._logs_written.discard(key)

    def cache_sizes(self) -> dict[str, int]:
        with self._guard:
            return {"log_due": len(self._log_due), "logs_written": len(self._logs_written)}

    def live(self, key: RunKey, identity: RunIdentity, status: Mapping[str, Any]) -> None:
        """While an attempt runs, refresh its stored log every `live_log_seconds` (`kubemill logs -f` and
        the UI follow the stored, masked log, never the raw pod log)."""
        now = self.clock().timestamp()
        with self._guard:
            due = self._log_due.get(key)
            if (
                due is None
            ):  # the first refresh one interval in: most runs are over by then (no extra requests)
                self._log_due[key] = now + self.live_log_seconds
                self._wake(key)
                return
            if now < due:
                return
            self._log_due[key] = now + self.live_log_seconds
        self.store(key, identity, status, final=False)
        self._wake(key)

    def store(self, key: RunKey, identity: RunIdentity, status: Mapping[str, Any], final: bool) -> None:
        """Append the current attempt's output (masked, bounded) to the run's stored log. Best effort: a log
        that cannot be read (the pod is gone) or written never changes how the run ends."""
        namespace, name = key
        pod = (status.get("pod") or {}).get("name")
        attempt = int(status.get("attempts", 0) or 0)
        if not pod or attempt < 1:
            return
        try:
            raw = self.kube.pod_log(
                namespace, pod, container=builders.CONTAINER, tail_lines=runlogs.POD_LOG_LINES
            )
        except (NotFound, ApiRejected, ApiUnavailable):
            log.info("scriptrun %s/%s: the log of pod %s is gone; none stored", namespace, name, pod)
            return
        text = runlogs.run_log_text(attempt, raw, self._masks(key))
        cm_name = runlogs.log_configmap_name(name)
        try:
            if attempt == 1 and key not in self._logs_written:
                # Nothing stored for this run by this process: usually nothing at all, so try creating first
                # (one request); anything already there is dealt with below.
                bounded, cut = runlogs.bound(text, runlogs.LOG_MAX)
                try:
                    _, created = self.kube.create(runlogs.build_log_configmap(identity, bounded, cut, final))
                except NotOurs:
                    created = False
                if created:
                    self._logs_written.add(key)
                    return
            previous = self.kube.get_or_none("v1", "ConfigMap", namespace, cm_name)
            owners = ((previous or {}).get("metadata") or {}).get("ownerReferences") or []
            if previous is not None and not any(o.get("uid") == identity.uid for o in owners):
                # Not this run's (planted before it, or left by an earlier run of the same name): replace it.
                self.kube.delete("v1", "ConfigMap", namespace, cm_name)
                previous = None
            cut = 0
            if previous is not None:
                stored = runlogs.read_log_configmap(previous)
                header = runlogs.attempt_header(attempt)
                kept = runlogs.strip_notice(stored.text)
                if header in kept:  # this attempt was stored already (a crash before the status write)
                    kept = kept[: kept.index(header)]
                text, cut = kept + text, stored.cut_bytes
            text, cut = runlogs.bound(text, runlogs.LOG_MAX, cut)
            cm = runlogs.build_log_configmap(identity, text, cut, final)
            if previous is not None and previous.get("binaryData") == cm["binaryData"] and not final:
                return
            if previous is None:
                self.kube.create(cm)
            else:
                patch = {k: cm[k] for k in ("binaryData",)}
                patch["metadata"] = {"annotations": cm["metadata"]["annotations"]}
                self.kube.patch("v1", "ConfigMap", namespace, cm_name, patch)
            self._logs_written.add(key)
        except (ApiRejected, ApiUnavailable, NotOurs) as exc:
            log.warning("scriptrun %s/%s: its log could not be stored: %s", namespace, name, exc)
