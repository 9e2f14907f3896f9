"""Starting a ScriptRun's attempt: its code ConfigMap, its per-run Secret (args, resolved `$res:`/`$var:`
files, masks), its Job (offered to a warm pool when one can take it).

`RunExecutor` calls `Attempts.start` for the engine's `StartAttempt`, before it writes the status that points
at the Job. What can fail before the Job exists fails the run instead, as the engine decides it: a name
kubemill computes already holding something it did not write (`NotOurs`), an entrypoint the Script lacks, a
`$res:`/`$var:` path the Script may not read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubemill import constants
from kubemill.engine import scriptrun
from kubemill.engine.entrypoints import CallProblem
from kubemill.engine.scriptrun import Failure, Inputs, status_data
from kubemill.errors import NotOurs
from kubemill.k8s import builders, jobs
from kubemill.k8s.api import KubeApi
from kubemill.k8s.builders import JobOptions, RunIdentity, RunTarget
from kubemill.models.scripts import ScriptRun
from kubemill.operator import metrics
from kubemill.operator.pool_dispatch import PoolDispatcher
from kubemill.operator.run_inputs import run_secret_files
from kubemill.operator.script_catalog import ScriptCatalog
from kubemill.runners.languages import RunContext
from kubemill.runners.lockfile import LOCKED_LANGUAGES
from kubemill.runners.validation import args_for_language, run_args
from kubemill.secrets import UnresolvedReference, decode_secret, masks_from_secret_data

FLOW_RUN_LABEL = constants.LABEL_FLOW_RUN_UID


@dataclass(frozen=True)
class Started:
    status: dict[str, Any] | None = None
    """The status to write instead of a Running one: the run failed before its Job existed."""
    masks: frozenset[str] | None = None
    """Every form of the run's secret values, once its Secret is written (stored logs mask them)."""


class Attempts:
    """Creates what an attempt runs with; one per executor."""

    def __init__(
        self,
        kube: KubeApi,
        catalog: ScriptCatalog,
        options: JobOptions,
        pools: PoolDispatcher,
        clock: Callable[[], datetime],
    ) -> None:
        self.kube = kube
        self.catalog = catalog
        self.options = options
        self.pools = pools
        self.clock = clock

    def start(self, run: ScriptRun, identity: RunIdentity, target: RunTarget, attempt: int) -> Started:
        try:
            return self._create(run, identity, target, attempt)
        except NotOurs as exc:  # something planted under a name we compute: never run with it
            return self._failed(run, Failure("NotOurs", str(exc)))

    def _failed(self, run: ScriptRun, failure: Failure) -> Started:
        inputs = Inputs(now=self.clock(), target=None, target_problem=failure)
        return Started(status=status_data(scriptrun.decide(run, inputs).status))

    def _create(self, run: ScriptRun, identity: RunIdentity, target: RunTarget, attempt: int) -> Started:
        namespace, name = identity.namespace, identity.name
        # A Script's code is owned by its Script; inline code by the run (even when it names a Script's path)
        script_owner = self.catalog.owner_of(namespace, target.path) if run.spec.script is None else None
        self.catalog.ensure_code(namespace, target, script_owner or identity)
        call = scriptrun.call_for(run, target)  # main, or a preprocessor: never chosen by the args
        if isinstance(call, CallProblem):
            return self._failed(run, Failure(call.name, call.message))
        args = args_for_language(target.language, call.args)
        if target.schema is not None and call.validate:
            args = run_args(target.schema, args)  # optional nulls left out, so the script's defaults apply
        try:  # `$res:`/`$var:` in args resolved here, into the per-run Secret (never into the status)
            files, args = run_secret_files(self.kube, namespace, target.resources, args)
        except UnresolvedReference as exc:
            return self._failed(run, Failure(exc.reason, exc.message))
        masks = masks_from_secret_data(files)
        if run.spec.flow_user_states is not None:
            files = {**files, builders.FLOW_STATES_KEY: json.dumps(run.spec.flow_user_states)}
        secret = builders.build_run_secret(identity, args, files)
        stored, created = self.kube.create(secret)  # immutable: a retry's attempt mounts what is stored
        secret_data = secret["stringData"] if created else decode_secret(stored.get("data"))
        context = RunContext(
            workspace=namespace,
            job_id=run.metadata.uid or name,
            job_path=target.path,
            flow_job_id=(run.metadata.labels or {}).get(FLOW_RUN_LABEL, ""),
            flow_step_id=run.spec.step_id or "",
            schedule_path=run.spec.schedule_path or "",
            scheduled_for=run.spec.scheduled_for.isoformat() if run.spec.scheduled_for else "",
            entrypoint=call.entrypoint,
        )
        job = jobs.build_job(
            identity,
            target,
            attempt,
            list(secret["stringData"]),
            context,
            self.options,
            shared_claim=run.spec.shared_claim,
            deps_claim=self._deps_claim(namespace, target),
        )
        job = self.pools.offer(identity, target, job, secret_data)  # suspended, for a pool worker, if it can
        _, created = self.kube.create(job)
        if created:
            metrics.RUNS_STARTED.labels(namespace, target.language, target.path).inc()
        return Started(masks=masks)

    def _deps_claim(self, namespace: str, target: RunTarget) -> str | None:
        """The namespace's shared dependency cache, for a locked Python or Bun run, when its claim is
        Bound."""
        if target.lock is None or target.language not in LOCKED_LANGUAGES:
            return None
        claim = self.kube.get_or_none("v1", "PersistentVolumeClaim", namespace, builders.DEPS_CLAIM)
        bound = claim is not None and (claim.get("status") or {}).get("phase") == "Bound"
        return builders.DEPS_CLAIM if bound else None
