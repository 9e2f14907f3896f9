"""`kubemill logs RUN [--step ID] [-f]`: the masked logs the operator stored for a run (each step's, for a
FlowRun, subflows included), never the raw pod log."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubemill.ctl.common import API, POLL, TERMINAL, CtlError, Ctx, add_common, find_run, run_command
from kubemill.errors import ApiRejected
from kubemill.k8s import runlogs


def add_arguments_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a ScriptRun or FlowRun")
    parser.add_argument("--step", help="a FlowRun's step id (every iteration of it inside loops)")
    parser.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    add_common(parser)


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
    return run_command("logs", args, _logs)
