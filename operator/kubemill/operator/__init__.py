"""`kubemill operator`: the Kopf operator that reconciles kubemill's resources into Jobs, CronJobs and status.

Each kind's handlers live in one module of this package (`scripts`, `flows`, `approvals`, `schedules`,
`resources`); this module wires them up: it imports those that exist (by name, so a build without one still
runs), configures Kopf (annotations under `kubemill.dev`, no peering, no event batching delay), serves
`/healthz` (Kopf's liveness probe) and `/metrics` (Prometheus), and builds the one `runtime.Operator`
(options, API client, caches) that every handler gets through Kopf's memo.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os

import kopf

from kubemill import constants
from kubemill.k8s.builders import DEFAULT_IMAGE_TEMPLATE
from kubemill.k8s.client import Kube
from kubemill.k8s.retention import Policy
from kubemill.operator import memory_report, metrics
from kubemill.operator.runtime import Operator, Settings

HANDLER_MODULES = ("scripts", "flows", "approval_webhooks", "schedules", "resources", "retention", "pools")
ANNOTATION_PREFIX = "kopf.kubemill.dev"
FINALIZER = constants.FINALIZER

log = logging.getLogger("kubemill.operator")


def load_handlers() -> list[str]:
    """Import the handler modules that exist; return their names."""
    loaded = []
    for name in HANDLER_MODULES:
        module = f"{__name__}.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        loaded.append(name)
    return loaded


def configure_settings(settings: kopf.OperatorSettings, workers: int) -> None:
    """Kopf settings every kubemill handler relies on."""
    settings.peering.standalone = True
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


def add_arguments_operator(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; glob patterns allowed); default: the whole cluster",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics (0: off)")
    parser.add_argument("--health-port", type=int, default=8081, help="port of /healthz (0: off)")
    parser.add_argument("--bind", default="0.0.0.0", help="address /metrics and /healthz listen on")  # noqa: S104
    parser.add_argument("--workers", type=int, default=32, help="threads for synchronous handlers")
    parser.add_argument(
        "--runner-image",
        default=DEFAULT_IMAGE_TEMPLATE,
        help="runner image template ({language}, {version}); default: %(default)s",
    )
    parser.add_argument(
        "--pool-agent-image",
        default="",
        help="image of RunnerPool workers' agent container (default: ghcr.io/kubemill/operator:<version>)",
    )
    parser.add_argument(
        "--run-history-limit",
        type=int,
        default=100,
        help="finished ScriptRuns kept per script and namespace (older ones are deleted; 0: keep all)",
    )
    parser.add_argument(
        "--live-log-seconds",
        type=float,
        default=5.0,
        help="seconds between refreshes of a running run's stored log (logs -f, the UI; 0: at the end only)",
    )
    parser.add_argument(
        "--ttl-seconds-after-success",
        type=int,
        default=0,
        help="delete finished Succeeded runs this long after they ended (0: never; per namespace: "
        "annotation kubemill.dev/ttl-seconds-after-success)",
    )
    parser.add_argument(
        "--ttl-seconds-after-failure",
        type=int,
        default=0,
        help="the same for Failed and Cancelled runs (kubemill.dev/ttl-seconds-after-failure)",
    )
    parser.add_argument(
        "--max-finished-runs",
        type=int,
        default=0,
        help="finished top-level runs kept per kind and namespace (0: all; kubemill.dev/max-finished-runs)",
    )
    parser.add_argument(
        "--retention-interval", type=float, default=60.0, help="seconds between retention sweeps (0: off)"
    )
    parser.add_argument(
        "--runner-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for every runner pod (repeatable; e.g. a proxy or CA bundle path)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every handler call")


def cli_operator(args: argparse.Namespace) -> int:
    options = Settings()
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # Kopf's own login reads it too
    options.runner_image_template = args.runner_image
    options.pool_agent_image = args.pool_agent_image
    options.run_history_limit = args.run_history_limit
    options.live_log_seconds = args.live_log_seconds
    for flag in ("ttl_seconds_after_success", "ttl_seconds_after_failure", "max_finished_runs"):
        if getattr(args, flag) < 0:
            raise SystemExit(f"kubemill operator: --{flag.replace('_', '-')} must be 0 or more")
    options.retention = Policy(
        args.ttl_seconds_after_success, args.ttl_seconds_after_failure, args.max_finished_runs
    )
    options.retention_interval = args.retention_interval
    options.workers = args.workers
    for item in args.runner_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"kubemill operator: --runner-env expects NAME=VALUE, got {item!r}")
        options.runner_env[name] = value
    kopf.configure(verbose=args.verbose)
    loaded = load_handlers()
    log.info("kubemill operator: handlers %s", ", ".join(loaded) or "(none)")
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.bind)
    kopf_settings = kopf.OperatorSettings()
    configure_settings(kopf_settings, args.workers)
    api = Kube.from_kubeconfig(args.kubeconfig, observe=metrics.observe_api_request)
    operator = Operator.build(options, api)
    memory_report.start(operator.executor, operator.stopping)  # KUBEMILL_MEMORY_REPORT (debugging)
    kopf.run(
        settings=kopf_settings,
        memo=operator.memo(),
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://{args.bind}:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0
