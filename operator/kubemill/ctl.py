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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubemill import constants
from kubemill.errors import ApiRejected, ApiUnavailable, NotFound
from kubemill.k8s import objectstore, runlogs
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


# --- connection -------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("-n", "--namespace", help="namespace (workspace); default: the context's")


@dataclass
class Ctx:
    kube: Kube
    namespace: str


def _connect(args: argparse.Namespace) -> Ctx:
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


def _run_command(name: str, args: argparse.Namespace, body: Any) -> int:
    try:
        code: int = body(_connect(args), args)
        return code
    except CtlError as exc:
        print(f"kubemill {name}: {exc}", file=sys.stderr)
    except (ApiRejected, ApiUnavailable, NotFound) as exc:
        print(f"kubemill {name}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 2


# --- finding runs and targets -----------------------------------------------------------------------------


def find_run(ctx: Ctx, name: str) -> dict[str, Any]:
    """The FlowRun or ScriptRun called `name` (FlowRun first)."""
    for kind in ("FlowRun", "ScriptRun"):
        found = ctx.kube.get_or_none(API, kind, ctx.namespace, name)
        if found is not None:
            return found
    raise CtlError(f"no FlowRun or ScriptRun named {name!r} in namespace {ctx.namespace}")


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


# --- submit -----------------------------------------------------------------------------------------------


def add_arguments_submit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="Windmill path of the Script or Flow, e.g. f/orders/process")
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="an arg (repeatable)")
    parser.add_argument("-i", "--input", help="args as a JSON object, or @file")
    parser.add_argument("--kind", choices=("script", "flow"), help="when a Script and a Flow share the path")
    parser.add_argument("--name", help="the run's name (default: generated from the path)")
    parser.add_argument("-w", "--watch", action="store_true", help="follow the run; exit code = its outcome")
    _common(parser)


def _run_manifest(kind: str, namespace: str, path: str, args: Mapping[str, Any], name: str | None) -> Any:
    meta: dict[str, Any] = {"namespace": namespace}
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = path.rsplit("/", 1)[-1].replace("_", "-").lower()[:40].strip("-") + "-"
    spec_key = "flowPath" if kind == "FlowRun" else "scriptPath"
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": {spec_key: path, "args": dict(args)}}


def _create(ctx: Ctx, manifest: Mapping[str, Any]) -> dict[str, Any]:
    from kubemill.k8s.client import object_path, plural_of

    path = object_path(API, plural_of(manifest["kind"]), ctx.namespace)
    created: dict[str, Any] = ctx.kube.request("POST", path, body=dict(manifest))
    return created


def _submit(ctx: Ctx, args: argparse.Namespace) -> int:
    kind = "FlowRun" if _target_kind(ctx, args.path, args.kind) == "Flow" else "ScriptRun"
    run_args = parse_args(args.arg, args.input)
    created = _create(ctx, _run_manifest(kind, ctx.namespace, args.path, run_args, args.name))
    name = created["metadata"]["name"]
    print(f"{kind.lower()}/{name} created", file=sys.stderr)
    if not args.watch:
        print(name)
        return 0
    return watch(ctx, kind, name)


def cli_submit(args: argparse.Namespace) -> int:
    return _run_command("submit", args, _submit)


def _progress_lines(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[str]:
    """What changed between two statuses, a line per step that moved, then the run's phase."""
    if kind == "FlowRun":
        before = old.get("steps") or {}
        for step, record in (new.get("steps") or {}).items():
            phase = record.get("phase")
            if (before.get(step) or {}).get("phase") != phase:
                extra = ""
                if record.get("error"):
                    extra = f": {record['error'].get('name')}: {record['error'].get('message', '')[:200]}"
                yield f"  step {step}: {phase}{extra}"
        waiting = {p.get("step") for p in old.get("pendingApprovals") or []}
        for pending in new.get("pendingApprovals") or []:
            if pending.get("step") not in waiting:
                who = ", ".join(pending.get("approvers") or []) or "anyone"
                yield f"  step {pending.get('step')}: waiting for approval by {who}"
    if old.get("phase") != new.get("phase"):
        yield f"{new.get('phase', 'Pending')}"


def watch(ctx: Ctx, kind: str, name: str, out: Any = None) -> int:
    """Follow a run until it ends, printing each step's progress on stderr and the result on stdout."""
    out = out or sys.stdout
    seen: Mapping[str, Any] = {}
    while True:
        run = ctx.kube.get_or_none(API, kind, ctx.namespace, name)
        if run is None:
            raise CtlError(f"{kind.lower()} {name} was deleted while being watched")
        status = run.get("status") or {}
        for line in _progress_lines(kind, seen, status):
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


def _where(ref: Mapping[str, Any]) -> str:
    if ref.get("s3"):
        return f"(in workspace storage, {ref['s3']}, {ref.get('bytes')} bytes)"
    return f"(in ConfigMap {ref.get('name')})"


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


# --- get --------------------------------------------------------------------------------------------------


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
    _common(parser)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def duration(started: str | None, finished: str | None, now: datetime | None = None) -> str:
    start = _time(started)
    if start is None:
        return "-"
    end = _time(finished) or now or datetime.now(UTC)
    seconds = max(int((end - start).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def runs_table(runs: Sequence[Mapping[str, Any]], now: datetime | None = None) -> str:
    rows = [("NAME", "KIND", "TARGET", "PHASE", "STARTED", "DURATION")]
    for run in runs:
        spec, status = run.get("spec") or {}, run.get("status") or {}
        rows.append(
            (
                run["metadata"]["name"],
                run["kind"],
                spec.get("flowPath") or spec.get("scriptPath") or "(inline)",
                status.get("phase", "Pending"),
                status.get("startedAt", "-"),
                duration(status.get("startedAt"), status.get("finishedAt"), now),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def step_tree(run: Mapping[str, Any], now: datetime | None = None) -> str:
    """A FlowRun's steps as a tree (loop iterations and branch bodies under their step), or a ScriptRun."""
    spec, status = run.get("spec") or {}, run.get("status") or {}
    name = run["metadata"]["name"]
    head = (
        f"{run['kind']} {name}  {spec.get('flowPath') or spec.get('scriptPath') or '(inline)'}  "
        f"{status.get('phase', 'Pending')}  "
        f"{duration(status.get('startedAt'), status.get('finishedAt'), now)}"
    )
    lines = [head]
    if run["kind"] == "ScriptRun" and status.get("attempts"):
        lines.append(f"  attempts: {status['attempts']}")
    steps: Mapping[str, Any] = status.get("steps") or {}
    children: dict[str, list[str]] = {}
    for key in steps:
        parent = key.rsplit("/", 2)[0] if key.count("/") >= 2 else ""
        children.setdefault(parent, []).append(key)

    def order(key: str) -> tuple[str, str]:
        return (str(steps[key].get("startedAt") or "9999"), key)

    def render(parent: str, prefix: str) -> None:
        keys = sorted(children.get(parent, []), key=order)
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            record = steps[key]
            label = key if not parent else key[len(parent) + 1 :]
            parts = [
                label,
                str(record.get("phase", "")),
                duration(record.get("startedAt"), record.get("finishedAt"), now),
            ]
            if record.get("error"):
                parts.append(f"{record['error'].get('name')}: {record['error'].get('message', '')[:120]}")
            elif record.get("result") is not None:
                parts.append("→ " + _short(record["result"]))
            if record.get("run"):
                parts.append(f"({record['run']})")
            lines.append(prefix + ("└─ " if last else "├─ ") + "  ".join(parts))
            render(key, prefix + ("   " if last else "│  "))

    render("", "")
    for pending in status.get("pendingApprovals") or []:
        who = ", ".join(pending.get("approvers") or []) or "anyone"
        lines.append(f"waiting for approval of step {pending.get('step')} by {who}")
    if status.get("phase") == "Succeeded" and (status.get("result") is not None or status.get("resultRef")):
        lines.append(
            "result: "
            + (
                _short(status.get("result"), 200)
                if not status.get("resultRef")
                else _where(status["resultRef"])
            )
        )
    if status.get("error"):
        err = status["error"]
        step = f" at step {err['step']}" if err.get("step") else ""
        lines.append(f"error{step}: {err.get('name')}: {err.get('message', '')}")
    return "\n".join(lines)


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
    return _run_command("get", args, _get)


# --- logs -------------------------------------------------------------------------------------------------


def add_arguments_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a ScriptRun or FlowRun")
    parser.add_argument("--step", help="a FlowRun's step id (every iteration of it inside loops)")
    parser.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    _common(parser)


@dataclass(frozen=True)
class Source:
    label: str  # the step key, "" for a ScriptRun
    run: str  # the ScriptRun whose stored log this is


def log_sources(ctx: Ctx, run: Mapping[str, Any], step: str | None, prefix: str = "") -> list[Source]:
    """The ScriptRuns whose logs make up `run`'s (a FlowRun's steps, subflows' steps inside them)."""
    name = run["metadata"]["name"]
    if run["kind"] == "ScriptRun":
        return [Source(prefix, name)]
    steps: Mapping[str, Any] = (run.get("status") or {}).get("steps") or {}
    keys = [k for k in steps if steps[k].get("run")]
    if step is not None:
        keys = [k for k in keys if k == step or k.rsplit("/", 1)[-1] == step]
    keys.sort(key=lambda k: (str(steps[k].get("startedAt") or "9999"), k))
    sources: list[Source] = []
    for key in keys:
        child = steps[key]["run"]
        label = f"{prefix}{key}"
        sub = ctx.kube.get_or_none(API, "FlowRun", ctx.namespace, child)
        if sub is not None:
            sub.setdefault("kind", "FlowRun")
            sources.extend(log_sources(ctx, sub, None, label + "/"))
        else:
            sources.append(Source(label, child))
    return sources


def read_stored(ctx: Ctx, run_name: str) -> runlogs.StoredLog | None:
    name = runlogs.log_configmap_name(run_name)
    try:
        cm = ctx.kube.get_or_none("v1", "ConfigMap", ctx.namespace, name)
    except ApiRejected as exc:
        raise CtlError(f"run {run_name}: its stored log (ConfigMap {name}) is not readable: {exc}") from None
    return None if cm is None else runlogs.read_log_configmap(cm)


def _logs(ctx: Ctx, args: argparse.Namespace) -> int:
    run = find_run(ctx, args.run)
    kind = run["kind"]
    if args.step and kind != "FlowRun":
        raise CtlError(f"--step: {args.run} is a ScriptRun, it has no steps")
    printed: dict[str, int] = {}  # bytes of each source printed so far (counting what was cut)
    while True:
        sources = log_sources(ctx, run, args.step)
        if args.step and not sources and (run.get("status") or {}).get("phase") in TERMINAL:
            steps = ", ".join(sorted((run.get("status") or {}).get("steps") or {})) or "none"
            raise CtlError(f"flowrun {args.run} has no step {args.step!r} that ran (its steps: {steps})")
        several = kind == "FlowRun"
        for source in sources:
            stored = read_stored(ctx, source.run)
            if stored is None:
                continue
            body = runlogs.strip_notice(stored.text)
            total = stored.cut_bytes + len(body.encode())
            done = printed.get(source.run, 0)
            if total <= done:
                continue
            data = body.encode()
            if done < stored.cut_bytes:
                new = runlogs.cut_notice(stored.cut_bytes).encode() + data if not done else data
            else:
                new = data[done - stored.cut_bytes :]
            printed[source.run] = total
            text = new.decode("utf-8", errors="replace")
            if several:
                label = f"[{source.label}] "
                text = "".join(label + line for line in text.splitlines(keepends=True))
            sys.stdout.write(text)
            sys.stdout.flush()
        phase = (run.get("status") or {}).get("phase")
        if not args.follow or phase in TERMINAL:
            if phase in TERMINAL and not printed and not args.follow:
                _no_log_reason(run, args.step)
            if phase not in TERMINAL or all(
                (s := read_stored(ctx, src.run)) is None or s.final for src in sources
            ):
                return 0
        time.sleep(POLL)
        run = find_run(ctx, args.run)


def _no_log_reason(run: Mapping[str, Any], step: str | None) -> None:
    status = run.get("status") or {}
    error = status.get("error") or {}
    why = f" ({error.get('name')}: {error.get('message', '')[:200]})" if error else ""
    what = f"step {step} of " if step else ""
    print(
        f"kubemill logs: {what}{run['kind'].lower()} {run['metadata']['name']} has no stored log: "
        f"no runner pod ran{why}",
        file=sys.stderr,
    )


def cli_logs(args: argparse.Namespace) -> int:
    return _run_command("logs", args, _logs)


# --- approve / reject / cancel ----------------------------------------------------------------------------


def add_arguments_approve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the suspended FlowRun")
    parser.add_argument("step", help="the step waiting for approval")
    parser.add_argument("--payload", help="the resume payload (JSON), `resume` in the next step")
    parser.add_argument("--comment", help="a comment kept in the approval ledger")
    _common(parser)


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
    return _run_command("approve", args, _decide("approve"))


def cli_reject(args: argparse.Namespace) -> int:
    return _run_command("reject", args, _decide("reject"))


def add_arguments_cancel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a ScriptRun or FlowRun")
    _common(parser)


def _cancel(ctx: Ctx, args: argparse.Namespace) -> int:
    run = find_run(ctx, args.run)
    phase = (run.get("status") or {}).get("phase")
    if phase in TERMINAL:
        raise CtlError(f"{run['kind'].lower()} {args.run} has already finished ({phase})")
    ctx.kube.patch(API, run["kind"], ctx.namespace, args.run, {"metadata": {"annotations": {CANCEL: "true"}}})
    print(f"{run['kind'].lower()}/{args.run}: cancel requested", file=sys.stderr)
    return 0


def cli_cancel(args: argparse.Namespace) -> int:
    return _run_command("cancel", args, _cancel)


# --- retry ------------------------------------------------------------------------------------------------


def add_arguments_retry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished ScriptRun or FlowRun")
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="a failed FlowRun: run every step again (default: from the failed step)",
    )
    parser.add_argument("-w", "--watch", action="store_true", help="follow the new run")
    _common(parser)


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
    created = _create(ctx, retry_manifest(run, args.from_start))
    name = created["metadata"]["name"]
    print(f"{run['kind'].lower()}/{name} created (a retry of {args.run})", file=sys.stderr)
    if not args.watch:
        print(name)
        return 0
    return watch(ctx, run["kind"], name)


def cli_retry(args: argparse.Namespace) -> int:
    return _run_command("retry", args, _retry)
