"""The operator's one object: its options, its API client and what it keeps between events.

`cli_operator` builds one `Operator` (options parsed once, one API client, the script catalog, the one work
queue of both run kinds, the ScriptRun executor with its caches, the FlowRun reconciler with its caches, the
resume links and their signing key, the Schedules' locks, the operator's own user) and hands it to every
handler through Kopf's memo (`kopf.run(memo=...)`; a handler reads it with `of(memo)`), so handler modules
hold no state of their own and a test can build one around an in-memory `KubeApi`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import kopf

from kubemill.engine import IsolatedEvaluator
from kubemill.k8s import builders
from kubemill.k8s.api import KubeApi
from kubemill.k8s.retention import Policy
from kubemill.operator.flowrun_reconciler import FlowRunReconciler
from kubemill.operator.resume_urls import ResumeLinks
from kubemill.operator.run_executor import RunExecutor
from kubemill.operator.schedule_locks import ScheduleLocks
from kubemill.operator.script_catalog import ScriptCatalog
from kubemill.operator.signing import SigningKey
from kubemill.operator.work_queue import WorkQueue

MEMO_KEY = "operator"


@dataclass
class Settings:
    """Operator-wide options from the command line."""

    runner_image_template: str = builders.DEFAULT_IMAGE_TEMPLATE
    run_history_limit: int = 100
    live_log_seconds: float = 5.0
    retention: Policy = field(default_factory=Policy)
    retention_interval: float = 60.0
    workers: int = 16
    runner_env: dict[str, str] = field(default_factory=dict)
    pool_agent_image: str = ""
    """The image of RunnerPool workers' agent container (empty: ghcr.io/kubemill/operator:<version>)."""


@dataclass
class Operator:
    """Everything the handlers share, built once per process."""

    settings: Settings
    kube: KubeApi
    catalog: ScriptCatalog
    queue: WorkQueue
    """Both run kinds' reconciles: one at a time per run, triggers coalesced, re-adds on one timer."""
    executor: RunExecutor
    flowruns: FlowRunReconciler
    links: ResumeLinks
    """Resume URLs: where they are served (set when the server listens) and the key that signs them."""
    schedules: ScheduleLocks
    operator_user: str | None = None
    """Who the API server says this operator is (learnt at startup; admission handlers compare with it)."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when Kopf stops: background loops (retention sweeps) end."""
    warned: set[tuple[str, str]] = field(default_factory=set)
    """(namespace, problem) pairs already logged, so a bad annotation is reported once, not every sweep."""

    @classmethod
    def build(cls, settings: Settings, kube: KubeApi) -> Operator:
        catalog = ScriptCatalog(kube)
        queue = WorkQueue(workers=settings.workers)
        options = builders.JobOptions(
            image_template=settings.runner_image_template, extra_env=dict(settings.runner_env)
        )
        executor = RunExecutor(
            kube,
            catalog,
            options,
            history_limit=settings.run_history_limit,
            workers=settings.workers,
            live_log_seconds=settings.live_log_seconds,
            queue=queue,
        )
        links = ResumeLinks(kube, SigningKey(kube))
        flowruns = FlowRunReconciler(kube, links, evaluator=IsolatedEvaluator(), queue=queue)
        return cls(settings, kube, catalog, queue, executor, flowruns, links, ScheduleLocks())

    def memo(self) -> kopf.Memo:
        return kopf.Memo({MEMO_KEY: self})


def of(memo: kopf.Memo) -> Operator:
    """The operator a handler was given."""
    found = memo.get(MEMO_KEY)
    if not isinstance(found, Operator):
        raise RuntimeError("the operator was started without its Operator in Kopf's memo (see cli_operator)")
    return found
