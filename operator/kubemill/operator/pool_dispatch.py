"""Warm runner pools: the dispatcher the run executor asks, pool or Job, and that follows pool attempts.

`PoolDispatcher` is the executor's one contact with pools (docs/pools.md): `offer` turns an attempt's Job
into a suspended Job offered to the Script's pool when the pool can take it, the run's files sealed on it for
the pool's workers (k8s/pool_inputs.py); `observe` reads a pool attempt's claim from its Job and answers
with the same `Observation` a Job's pod gives; it falls back to the Job (unsuspends it) when no worker
claims the run in time or the pool has no ready worker, and fails an attempt whose claim lapsed
(`WorkerLost`) so the Script's retry decides what follows. The RunnerPool handlers (operator/pools.py) keep
its view of each pool's capacity, and its key, current.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubemill.engine.scriptrun import Failure, Observation
from kubemill.errors import ApiRejected, Conflict
from kubemill.k8s import builders, pool_inputs
from kubemill.k8s import pools as kpools
from kubemill.k8s.api import JSON_PATCH, KubeApi
from kubemill.k8s.builders import RunIdentity, RunTarget
from kubemill.k8s.scriptruns import _from_envelope as observation_of_envelope
from kubemill.operator import metrics
from kubemill.runners import envelope_from_termination_message

log = logging.getLogger(__name__)

QUEUE_DEPTH, BUSY_WORKERS, READY_WORKERS = metrics.POOL_QUEUE_DEPTH, metrics.POOL_BUSY, metrics.POOL_READY
CLAIM_LATENCY, POOL_OUTCOMES = metrics.POOL_CLAIM_LATENCY, metrics.POOL_ATTEMPTS


@dataclass
class PoolInfo:
    """What the dispatcher knows of a pool: its spec's knobs and its workers' state (from the timer)."""

    language: str
    default: bool
    lease_seconds: int
    claim_timeout_seconds: int
    max_queued: int
    ready: int = 0
    queued: int = 0


RunKey = tuple[str, str]
DONE_KEPT = 10000


class PoolDispatcher:
    """Decides, per attempt, pool or Job; follows pool attempts. Thread-safe; one per operator."""

    def __init__(
        self, kube: KubeApi, clock: Callable[[], datetime], requeue_after: Callable[[Hashable, float], None]
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.requeue_after = requeue_after
        self._pools: dict[tuple[str, str], PoolInfo] = {}
        self._claims_seen: set[str] = set()
        self._done: dict[tuple[str, str], None] = {}
        """Pool attempts settled (oldest first, at most DONE_KEPT): each is counted and revoked once."""
        self._keys: dict[tuple[str, str], bytes] = {}
        """Each pool's sealing key (its key Secret, created or read when the pool is applied)."""
        self._guard = threading.Lock()
        self.applied: dict[tuple[str, str], tuple[str, int]] = {}
        """(uid, generation) of each pool spec applied here: status writes do not apply it again."""

    # --- the pools' state, from the handlers ------------------------------------------------------------

    def update(self, namespace: str, name: str, info: PoolInfo | None) -> None:
        with self._guard:
            if info is None:
                self._pools.pop((namespace, name), None)
                self._keys.pop((namespace, name), None)
            else:
                self._pools[(namespace, name)] = info

    def set_key(self, namespace: str, name: str, key: bytes) -> None:
        with self._guard:
            self._keys[(namespace, name)] = key

    def cache_sizes(self) -> dict[str, int]:
        with self._guard:
            return {"pool_claims_seen": len(self._claims_seen), "pool_done": len(self._done)}

    def _info(self, namespace: str, name: str) -> PoolInfo | None:
        with self._guard:
            return self._pools.get((namespace, name))

    def pool_for(self, namespace: str, target: RunTarget) -> str | None:
        """The pool a target asks for: its `spec.runner.pool`, else its language's default pool here."""
        if target.runner is not None and target.runner.pool:
            return target.runner.pool
        with self._guard:
            defaults = sorted(
                n
                for (ns, n), p in self._pools.items()
                if ns == namespace and p.default and p.language == target.language
            )
        return defaults[0] if defaults else None

    # --- offering -------------------------------------------------------------------------------------

    def offer(
        self, run: RunIdentity, target: RunTarget, job: dict[str, Any], run_secret: Mapping[str, str]
    ) -> dict[str, Any]:
        """The Job to create for this attempt: offered to a pool (suspended, its files sealed on it), or as it
        is (a Job runs it; when the Script asked for a pool, the Job's annotation says why not).
        `run_secret` is the per-run Secret's data as the Job mounts it (text)."""
        pool = self.pool_for(run.namespace, target)
        if pool is None:
            return job
        info = self._info(run.namespace, pool)
        with self._guard:
            key = self._keys.get((run.namespace, pool))
        reason = kpools.offer_problem(job)
        if info is None:
            reason = f"no RunnerPool {pool} in namespace {run.namespace}"
        elif info.language != target.language:
            reason = f"RunnerPool {pool} runs {info.language}, the Script is {target.language}"
        elif info.ready == 0:
            reason = f"RunnerPool {pool} has no ready worker"
        elif info.queued >= info.max_queued:
            reason = f"RunnerPool {pool} has {info.queued} runs queued (maxQueued {info.max_queued})"
        elif key is None:
            reason = f"RunnerPool {pool}'s key Secret {kpools.key_secret_name(pool)} is not readable yet"
        sealed = None
        if reason is None:
            assert key is not None
            sealed = pool_inputs.seal(
                key, run.namespace, job["metadata"]["name"], pool, self._files(run, target, job, run_secret)
            )
            if len(sealed) > pool_inputs.INPUTS_MAX:
                reason = (
                    f"the run's files seal to {len(sealed)} characters, more than a pool run carries "
                    f"({pool_inputs.INPUTS_MAX}): runs as a Job"
                )
        if reason is not None:
            return kpools.with_fallback_reason(job, reason)
        assert info is not None
        assert sealed is not None
        with self._guard:
            info.queued += 1
        return kpools.offered(job, pool, self.clock(), sealed)

    def _files(
        self, run: RunIdentity, target: RunTarget, job: dict[str, Any], run_secret: Mapping[str, str]
    ) -> pool_inputs.Files:
        """What the Job's pod would find in its volumes: the code (built here, as its ConfigMap is), the
        per-run Secret (given), the state and the resume links (read: each is optional)."""
        code = builders.build_code_configmap(run.namespace, target, None)["data"]
        sources: dict[tuple[str, str], Mapping[str, bytes] | None] = {
            ("ConfigMap", builders.code_configmap_name(target.content_hash)): _utf8(code),
            ("Secret", builders.run_secret_name(run.name)): _utf8(run_secret),
        }
        for volume in job["spec"]["template"]["spec"].get("volumes") or []:
            if "configMap" in volume and ("ConfigMap", volume["configMap"]["name"]) not in sources:
                found = self.kube.get_or_none("v1", "ConfigMap", run.namespace, volume["configMap"]["name"])
                sources[("ConfigMap", volume["configMap"]["name"])] = (
                    None if found is None else _utf8(found.get("data") or {})
                )
            elif "secret" in volume and ("Secret", volume["secret"]["secretName"]) not in sources:
                found = self.kube.get_or_none("v1", "Secret", run.namespace, volume["secret"]["secretName"])
                sources[("Secret", volume["secret"]["secretName"])] = (
                    None
                    if found is None
                    else {k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()}
                )
        return pool_inputs.volume_files(job, sources)

    # --- following ------------------------------------------------------------------------------------

    def observe(self, key: RunKey, job: dict[str, Any] | None) -> Observation | None:
        """The attempt, when a pool runs it (None: the Job does; follow it as any Job). Raises Conflict when
        the claim moved while this looked at it (decide again on fresh objects)."""
        if job is None:
            return None
        pool = kpools.pool_of(job)
        if pool is None:
            return None
        namespace = key[0]
        job_name = job["metadata"]["name"]
        claim = kpools.claim_of(job)
        info = self._info(namespace, pool)
        now = self.clock()
        if claim.state == "done":
            self._saw_claim(namespace, pool, job_name, claim)  # a claim this process never saw open
            self._settled(namespace, pool, job_name, "reported")
            return _observation(claim.outcome)
        lease = info.lease_seconds if info is not None else 10
        if claim.state == "lost":
            return _lost(pool, claim, lease)
        if claim.state == "claimed":
            self._saw_claim(namespace, pool, job_name, claim)
            if claim.expired(now, lease):
                self._patch(job, kpools.lost_patch(str(claim.worker)))
                self._settled(namespace, pool, job_name, "lost")
                return _lost(pool, claim, lease)
            assert claim.renewed_at is not None
            self.requeue_after(key, max(lease - (now - claim.renewed_at).total_seconds(), 0.0) + 0.5)
            return Observation("running")
        # offered
        waited = (now - claim.offered_at).total_seconds() if claim.offered_at else 0.0
        reason = None
        if info is None:
            reason = f"RunnerPool {pool} is gone"
        elif info.ready == 0:
            reason = f"RunnerPool {pool} has no ready worker"
        elif waited >= info.claim_timeout_seconds:
            reason = f"no worker of RunnerPool {pool} claimed the run within {info.claim_timeout_seconds}s"
        if reason is None:
            assert info is not None
            self.requeue_after(key, min(info.claim_timeout_seconds - waited, 2.0) + 0.05)
            return Observation("running")
        self._patch(job, kpools.fall_back_patch(reason))
        self._settled(namespace, pool, job_name, "fell-back")
        log.info("scriptrun %s/%s: %s; it runs as Job %s", namespace, key[1], reason, job_name)
        return Observation("running")

    def _patch(self, job: dict[str, Any], patch: list[dict[str, Any]]) -> None:
        meta = job["metadata"]
        try:
            self.kube.patch(
                "batch/v1", "Job", meta["namespace"], meta["name"], patch, content_type=JSON_PATCH
            )
        except ApiRejected as exc:  # a `test` failed: the claim moved meanwhile
            raise Conflict(f"the claim on Job {meta['name']} changed: {exc}") from None

    def _saw_claim(self, namespace: str, pool: str, job_name: str, claim: kpools.Claim) -> None:
        with self._guard:
            if job_name in self._claims_seen or (namespace, job_name) in self._done:
                return
            self._claims_seen.add(job_name)
            info = self._pools.get((namespace, pool))
            if info is not None and info.queued > 0:
                info.queued -= 1
        if claim.claimed_at is not None and claim.offered_at is not None:
            latency = (claim.claimed_at - claim.offered_at).total_seconds()
            CLAIM_LATENCY.labels(namespace, pool).observe(max(latency, 0.0))

    def _settled(self, namespace: str, pool: str, job_name: str, outcome: str) -> None:
        """The pool is done with this attempt: it counts once."""
        with self._guard:
            self._claims_seen.discard(job_name)
            if (namespace, job_name) in self._done:
                return  # seen again (a retried reconcile, a later event of the same Job)
            self._done[(namespace, job_name)] = None
            while len(self._done) > DONE_KEPT:
                del self._done[next(iter(self._done))]
        POOL_OUTCOMES.labels(namespace, pool, outcome).inc()


def _utf8(data: Mapping[str, str]) -> dict[str, bytes]:
    return {k: v.encode() for k, v in data.items()}


def _lost(pool: str, claim: kpools.Claim, lease: int) -> Observation:
    renewed = claim.renewed_at.isoformat() if claim.renewed_at else "never"
    message = (
        f"pool {pool} worker {claim.worker} stopped renewing its claim (last at {renewed}, lease {lease}s); "
        "what it may have done is not recorded"
    )
    return Observation("failed", failure=Failure("WorkerLost", message))


def _observation(outcome: str | None) -> Observation:
    envelope = envelope_from_termination_message(outcome)
    if envelope is None:
        return Observation("failed", failure=Failure("RunnerFailed", "the pool worker reported no envelope"))
    if envelope.truncated:
        size = f"{envelope.bytes} bytes" if envelope.bytes else "too large"
        return Observation(
            "failed",
            failure=Failure(
                "ResultTooLarge",
                f"the result envelope is {size}; a pool run reports at most {kpools.OUTCOME_MAX} bytes "
                "(run the Script without spec.runner.pool for results up to 1 MiB)",
            ),
        )
    return observation_of_envelope(envelope, None)
