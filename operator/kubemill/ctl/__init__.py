"""`kubemill` against a cluster (also `kubectl kubemill`): submit, get, logs, approve, reject, cancel, retry.

Everything goes through the API server as the caller (the kubeconfig's user), never around it: a run is a
ScriptRun or FlowRun the caller creates, an approval is the same annotation `kubectl annotate` sets (so the
approval admission webhook sees the caller's own identity and decides; nothing is signed here), a cancel is
the `kubemill.dev/cancel` annotation, a log is the masked log the operator stored in the run's ConfigMap
(`kubemill.k8s.runlogs`), never the raw pod log. Errors name the run (and the step).

Exit codes: 0 the run succeeded (or the command did what it was asked), 1 the run failed, 3 it was
cancelled, 2 the command could not do what it was asked (unknown run, refused by the API server, bad args).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

from kubemill.ctl.common import (
    API,
    APPROVE,
    CANCEL,
    COMMENT,
    EXIT,
    FLOW_RUN_LABEL,
    PAYLOAD,
    POLL,
    REJECT,
    RETRY_FROM,
    RETRY_OF,
    TERMINAL,
    CtlError,
    Ctx,
    add_common,
    find_run,
    result_of,
    run_command,
)
from kubemill.ctl.views import progress_lines, runs_table, step_tree
from kubemill.errors import ApiRejected


def _target_kind(ctx: Ctx, path: str, kind: str | None) -> str:
    found = []
    for k in ("Script", "Flow"):
        if kind in (None, k.lower()) and any(
            (o.get("spec") or {}).get("path") == path for o in ctx.kube.list(API, k, ctx.namespace)
        ):
            found.append(k)
    if not found:
        raise CtlError(f"no Script or Flow with path {path!r} in namespace {ctx.namespace}")
    if len(found) > 1:
        raise CtlError(f"both a Script and a Flow have path {path!r}: say which with --kind script|flow")
    return found[0]


def parse_args(pairs: list[str], input_json: str | None) -> dict[str, Any]:
    """`-i JSON|@file` then `--arg k=v` on top (a value that parses as JSON is taken as JSON)."""
    args: dict[str, Any] = {}
    if input_json:
        text = input_json
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise CtlError(f"-i is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise CtlError("-i must be a JSON object of args")
        args.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CtlError(f"--arg expects KEY=VALUE, got {pair!r}")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


def add_arguments_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="Windmill path of the Script or Flow, e.g. f/orders/process")
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="an arg (repeatable)")
    parser.add_argument("-i", "--input", help="args as a JSON object, or @file")
    parser.add_argument("--kind", choices=("script", "flow"), help="when a Script and a Flow share the path")
    parser.add_argument("--name", help="the run's name (default: generated from the path)")
    parser.add_argument("-w", "--watch", action="store_true", help="follow the run; exit code = its outcome")
    add_common(parser)


def _run_manifest(kind: str, namespace: str, path: str, args: Mapping[str, Any], name: str | None) -> Any:
    meta: dict[str, Any] = {"namespace": namespace}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = path.rsplit("/", 1)[-1].replace("_", "-").lower()[:40].strip("-") + "-"
    spec_key = "flowPath" if kind == "FlowRun" else "scriptPath"
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": {spec_key: path, "args": dict(args)}}


def create(ctx: Ctx, manifest: Mapping[str, Any]) -> dict[str, Any]:
    from kubemill.k8s.client import object_path, plural_of

    path = object_path(API, plural_of(manifest["kind"]), ctx.namespace)
    created: dict[str, Any] = ctx.kube.request("POST", path, body=dict(manifest))
    return created


def _submit(ctx: Ctx, args: argparse.Namespace) -> int:
    kind = "FlowRun" if _target_kind(ctx, args.path, args.kind) == "Flow" else "ScriptRun"
    run_args = parse_args(args.arg, args.input)
    created = create(ctx, _run_manifest(kind, ctx.namespace, args.path, run_args, args.name))
    name = created["metadata"]["name"]
    print(f"{kind.lower()}/{name} created", file=sys.stderr)
    if not args.watch:
        print(name)
        return 0
    return watch(ctx, kind, name)


def cli_submit(args: argparse.Namespace) -> int:
    return run_command("submit", args, _submit)


def watch(ctx: Ctx, kind: str, name: str, out: Any = None) -> int:
    """Follow a run until it ends, printing each step's progress on stderr and the result on stdout."""
    out = out or sys.stdout
    seen: Mapping[str, Any] = {}
    while True:
        run = ctx.kube.get_or_none(API, kind, ctx.namespace, name)
        if run is None:
            raise CtlError(f"{kind.lower()} {name} was deleted while being watched")
        status = run.get("status") or {}
        for line in progress_lines(kind, seen, status):
            print(f"{name}: {line}", file=sys.stderr)
        seen = status
        phase = status.get("phase")
        if phase in TERMINAL:
            if phase == "Succeeded":
                print(json.dumps(result_of(ctx, run), indent=2), file=out)
            else:
                error = status.get("error") or {}
                step = error.get("step") or status.get("failureStep") or status.get("currentStep")
                where = f" at step {step}" if step and kind == "FlowRun" else ""
                print(
                    f"{kind.lower()} {name} {phase.lower()}{where}: "
                    f"{error.get('name', phase)}: {error.get('message', '')}",
                    file=sys.stderr,
                )
            return EXIT[phase]
        time.sleep(POLL)


def add_arguments_get(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=("runs", "run"), help="runs: a table; run NAME: its tree of steps")
    parser.add_argument("name", nargs="?", help="the run (for `get run`)")
    parser.add_argument("-A", "--all", action="store_true", help="runs: include the steps' child runs")
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "json", "result"),
        default="text",
        help="result: the run's result as JSON, read from its ConfigMap or the workspace storage when large",
    )
    add_common(parser)


def _get(ctx: Ctx, args: argparse.Namespace) -> int:
    if args.what == "runs":
        runs = []
        for kind in ("FlowRun", "ScriptRun"):
            for item in ctx.kube.list(API, kind, ctx.namespace):
                item.setdefault("kind", kind)
                is_child = bool((item.get("spec") or {}).get("flowRun")) or FLOW_RUN_LABEL in (
                    item["metadata"].get("labels") or {}
                )
                if args.all or not is_child:
                    runs.append(item)
        runs.sort(key=lambda r: r["metadata"].get("creationTimestamp", ""))
        if args.output == "json":
            print(json.dumps({"items": runs}, indent=2))
        else:
            print(runs_table(runs))
        return 0
    if not args.name:
        raise CtlError("get run: give the run's name")
    run = find_run(ctx, args.name)
    if args.output == "result":
        print(json.dumps(result_of(ctx, run)))
        return 0
    print(json.dumps(run, indent=2) if args.output == "json" else step_tree(run))
    return 0


def cli_get(args: argparse.Namespace) -> int:
    return run_command("get", args, _get)


def add_arguments_approve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the suspended FlowRun")
    parser.add_argument("step", help="the step waiting for approval")
    parser.add_argument("--payload", help="the resume payload (JSON), `resume` in the next step")
    parser.add_argument("--comment", help="a comment kept in the approval ledger")
    add_common(parser)


add_arguments_reject = add_arguments_approve


def _decide(decision: str) -> Any:
    def body(ctx: Ctx, args: argparse.Namespace) -> int:
        run = ctx.kube.get_or_none(API, "FlowRun", ctx.namespace, args.run)
        if run is None:
            raise CtlError(f"no FlowRun named {args.run!r} in namespace {ctx.namespace}")
        pending = [p.get("step") for p in (run.get("status") or {}).get("pendingApprovals") or []]
        if args.step not in pending:
            waiting = ", ".join(str(p) for p in pending) or "no step"
            raise CtlError(f"flowrun {args.run} step {args.step}: not waiting for approval ({waiting} is)")
        annotations: dict[str, str | None] = {
            APPROVE: args.step if decision == "approve" else None,
            REJECT: args.step if decision == "reject" else None,
            COMMENT: args.comment or None,
            PAYLOAD: None,
        }
        if args.payload is not None:
            try:
                annotations[PAYLOAD] = json.dumps(json.loads(args.payload))
            except ValueError as exc:
                raise CtlError(f"--payload is not JSON: {exc}") from None
        try:
            ctx.kube.patch(
                API, "FlowRun", ctx.namespace, args.run, {"metadata": {"annotations": annotations}}
            )
        except ApiRejected as exc:
            raise CtlError(f"flowrun {args.run} step {args.step}: {exc.args[0]}") from None
        print(f"flowrun/{args.run} step {args.step}: {decision}d", file=sys.stderr)
        return 0

    return body


def cli_approve(args: argparse.Namespace) -> int:
    return run_command("approve", args, _decide("approve"))


def cli_reject(args: argparse.Namespace) -> int:
    return run_command("reject", args, _decide("reject"))


def add_arguments_cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a ScriptRun or FlowRun")
    add_common(parser)


def _cancel(ctx: Ctx, args: argparse.Namespace) -> int:
    run = find_run(ctx, args.run)
    phase = (run.get("status") or {}).get("phase")
    if phase in TERMINAL:
        raise CtlError(f"{run['kind'].lower()} {args.run} has already finished ({phase})")
    ctx.kube.patch(API, run["kind"], ctx.namespace, args.run, {"metadata": {"annotations": {CANCEL: "true"}}})
    print(f"{run['kind'].lower()}/{args.run}: cancel requested", file=sys.stderr)
    return 0


def cli_cancel(args: argparse.Namespace) -> int:
    return run_command("cancel", args, _cancel)


def add_arguments_retry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished ScriptRun or FlowRun")
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="a failed FlowRun: run every step again (default: from the failed step)",
    )
    parser.add_argument("-w", "--watch", action="store_true", help="follow the new run")
    add_common(parser)


def retry_manifest(run: Mapping[str, Any], from_start: bool = False) -> dict[str, Any]:
    """A new run of the same target with the same args (`kubemill.dev/retry-of` names the first); a failed
    FlowRun goes on from its failed step (`kubemill.dev/retry-from`: the operator reuses the steps before it)
    unless `from_start`."""
    spec = {
        k: v for k, v in (run.get("spec") or {}).items() if k in ("scriptPath", "script", "flowPath", "args")
    }
    name = run["metadata"]["name"]
    base = name.split("-retry-")[0][:40].rstrip("-")
    manifest: dict[str, Any] = {
        "apiVersion": API,
        "kind": run["kind"],
        "metadata": {
            "namespace": run["metadata"]["namespace"],
            "generateName": f"{base}-retry-",
            "annotations": {RETRY_OF: name},
        },
        "spec": spec,
    }
    failed = (run.get("status") or {}).get("phase") == "Failed"
    if run["kind"] == "FlowRun" and failed and not from_start:
        manifest["metadata"]["annotations"][RETRY_FROM] = "failed-step"
    return manifest


def _retry(ctx: Ctx, args: argparse.Namespace) -> int:
    run = find_run(ctx, args.run)
    phase = (run.get("status") or {}).get("phase")
    if phase not in TERMINAL:
        raise CtlError(f"{run['kind'].lower()} {args.run} is still {phase or 'Pending'}: cancel it first")
    if (run.get("spec") or {}).get("flowRun"):
        raise CtlError(f"{args.run} is a step of flowrun {run['spec']['flowRun']}: retry that FlowRun")
    created = create(ctx, retry_manifest(run, args.from_start))
    name = created["metadata"]["name"]
    print(f"{run['kind'].lower()}/{name} created (a retry of {args.run})", file=sys.stderr)
    if not args.watch:
        print(name)
        return 0
    return watch(ctx, run["kind"], name)


def cli_retry(args: argparse.Namespace) -> int:
    return run_command("retry", args, _retry)
