"""Which finished runs to delete: per-namespace TTLs and count limits, as Argo's `ttlStrategy` (pure).

The namespace's annotations (set by whoever administers it) override the operator's defaults (its flags, the
chart's `operator.retention` values):

    kubemill.dev/ttl-seconds-after-success   a Succeeded run is deleted this long after it finished
    kubemill.dev/ttl-seconds-after-failure   a Failed or Cancelled run, the same
    kubemill.dev/max-finished-runs           at most this many finished runs are kept per kind (the newest)

`0` or an empty value means no limit. Only top-level runs are considered: a flow's steps (child runs, with
`spec.flowRun`) go with their FlowRun, through owner references, and so do a run's stored log, its result
ConfigMap and its per-run Secret. A value that is not a non-negative integer is refused with a message
naming the annotation (`Policy.problems`) and that limit is not applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubemill import constants

AFTER_SUCCESS = constants.ANNOTATION_TTL_SECONDS_AFTER_SUCCESS
AFTER_FAILURE = constants.ANNOTATION_TTL_SECONDS_AFTER_FAILURE
MAX_FINISHED = constants.ANNOTATION_MAX_FINISHED_RUNS
FINISHED = ("Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class Policy:
    after_success: int = 0
    after_failure: int = 0
    max_finished: int = 0
    problems: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.after_success or self.after_failure or self.max_finished)


def policy_for(annotations: Mapping[str, str] | None, defaults: Policy) -> Policy:
    """The namespace's policy: its annotations over `defaults`."""
    values = {"after_success": defaults.after_success, "after_failure": defaults.after_failure,
              "max_finished": defaults.max_finished}  # fmt: skip
    problems = []
    for field, key in (("after_success", AFTER_SUCCESS), ("after_failure", AFTER_FAILURE),
                       ("max_finished", MAX_FINISHED)):  # fmt: skip
        raw = (annotations or {}).get(key)
        if raw is None:
            continue
        raw = raw.strip()
        if raw == "":
            values[field] = 0
        elif raw.isdigit():
            values[field] = int(raw)
        else:
            problems.append(f"annotation {key}={raw!r} is not a whole number of seconds or runs; ignored")
    return Policy(**values, problems=tuple(problems))


def _finished_at(run: Mapping[str, Any]) -> datetime | None:
    value = (run.get("status") or {}).get("finishedAt")
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def is_top_level(run: Mapping[str, Any]) -> bool:
    return not (run.get("spec") or {}).get("flowRun")


def expired(runs: Iterable[Mapping[str, Any]], policy: Policy, now: datetime) -> list[tuple[str, str]]:
    """(kind, name) of the runs to delete now, oldest first."""
    done = []
    for run in runs:
        phase = (run.get("status") or {}).get("phase")
        finished = _finished_at(run)
        if phase in FINISHED and finished is not None and is_top_level(run):
            done.append((finished, str(run.get("kind")), str(run["metadata"]["name"]), phase))
    done.sort()
    doomed: dict[tuple[str, str], None] = {}
    for finished, kind, name, phase in done:
        ttl = policy.after_success if phase == "Succeeded" else policy.after_failure
        if ttl and now - finished >= timedelta(seconds=ttl):
            doomed[(kind, name)] = None
    if policy.max_finished:
        for kind in {k for _, k, _, _ in done}:
            kept = [(k, n) for _, k, n, _ in done if k == kind and (k, n) not in doomed]
            for key in kept[: max(len(kept) - policy.max_finished, 0)]:
                doomed[key] = None
    order = {(k, n): i for i, (_, k, n, _) in enumerate(done)}
    return sorted(doomed, key=lambda key: order[key])
