"""What every cluster command shares: the connection (the kubeconfig's user and namespace), the one-line
errors, finding a run by name and reading its result."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubemill import constants
from kubemill.errors import ApiRejected, ApiUnavailable, NotFound
from kubemill.k8s import objectstore
from kubemill.k8s.client import Kube

API = constants.API_VERSION
TERMINAL = constants.TERMINAL_PHASES
CANCEL = constants.ANNOTATION_CANCEL
APPROVE, REJECT, COMMENT, PAYLOAD = (
    "kubemill.dev/approve",
    "kubemill.dev/reject",
    "kubemill.dev/comment",
    "kubemill.dev/payload",
)
RETRY_OF = constants.ANNOTATION_RETRY_OF
RETRY_FROM = constants.ANNOTATION_RETRY_FROM
FLOW_RUN_LABEL = constants.LABEL_FLOW_RUN_UID
EXIT = {"Succeeded": 0, "Failed": 1, "Cancelled": 3}
POLL = 1.0


class CtlError(Exception):
    """A one-line reason the command failed (printed as `kubemill <cmd>: <reason>`, exit 2)."""


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("-n", "--namespace", help="namespace (workspace); default: the context's")


@dataclass
class Ctx:
    kube: Kube
    namespace: str


def connect(args: argparse.Namespace) -> Ctx:
    import kubernetes

    kube = Kube.from_kubeconfig(args.kubeconfig)
    namespace = args.namespace
    if not namespace:
        try:
            _, active = kubernetes.config.list_kube_config_contexts(args.kubeconfig)  # type: ignore[no-untyped-call]
            namespace = (active or {}).get("context", {}).get("namespace")
        except (kubernetes.config.ConfigException, OSError):
            namespace = None
    return Ctx(kube, namespace or "default")


def run_command(name: str, args: argparse.Namespace, body: Any) -> int:
    try:
        code: int = body(connect(args), args)
        return code
    except CtlError as exc:
        print(f"kubemill {name}: {exc}", file=sys.stderr)
    except (ApiRejected, ApiUnavailable, NotFound) as exc:
        print(f"kubemill {name}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2


def find_run(ctx: Ctx, name: str) -> dict[str, Any]:
    """The FlowRun or ScriptRun called `name` (FlowRun first)."""
    for kind in ("FlowRun", "ScriptRun"):
        found = ctx.kube.get_or_none(API, kind, ctx.namespace, name)
        if found is not None:
            return found
    raise CtlError(f"no FlowRun or ScriptRun named {name!r} in namespace {ctx.namespace}")


def result_of(ctx: Ctx, run: Mapping[str, Any]) -> Any:
    status = run.get("status") or {}
    ref = status.get("resultRef")
    if not ref:
        return status.get("result")
    if ref.get("s3"):  # over 1 MiB: in the namespace's workspace storage
        storage = objectstore.read_storage(ctx.kube, ctx.namespace)
        if storage is None:
            raise NotFound(f"the result of {run['metadata']['name']} is in workspace storage, which is gone")
        return json.loads(objectstore.get_object(storage, ref["s3"]))
    cm = ctx.kube.get("v1", "ConfigMap", ctx.namespace, ref["name"])
    return json.loads((cm.get("data") or {}).get(ref.get("key", "result.json"), "null"))
