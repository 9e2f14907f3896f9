"""`kubemill run`: a script or a flow on this machine, without a cluster.

The command only: it finds the workspace, reads `--input`, and hands a flow to `local.flows` and a script to
`local.scripts.run_script`, printing the result (JSON) on stdout and a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kubemill.engine.entrypoints import CallProblem, plan_call
from kubemill.local import flows
from kubemill.local.scripts import (
    EXIT_FAILED,
    EXIT_INVALID,
    InvalidRun,
    default_context,
    default_state_file,
    load_workspace,
    lock_for,
    resolve_target,
    run_script,
)


def _find_workspace(explicit: str | None, target: str) -> Path:
    if explicit:
        return Path(explicit)
    start = Path(target).resolve().parent if Path(target).is_file() else Path.cwd()
    for folder in (start, *start.parents):
        if (folder / "wmill.yaml").exists():
            return folder
    return Path.cwd()


def add_arguments_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="TARGET", help="a script file, or a Windmill path like f/folder/name"
    )
    parser.add_argument("--input", "-i", default="{}", help="the args: a JSON object, or @FILE to read one")
    parser.add_argument("--workspace", "-w", help="a Windmill-layout workspace (default: nearest wmill.yaml)")
    parser.add_argument("--timeout", type=float, help="seconds before the run is killed (default: none)")
    parser.add_argument(
        "--approve", action="append", default=[], metavar="STEP", help="flows: pre-approve this approval step"
    )
    parser.add_argument(
        "--trigger-event",
        metavar="JSON",
        help="start the run as a trigger would, with this event (a JSON object with `kind`, `body`, "
        "`query`, `headers`, or @FILE): a flow's preprocessor_module, or a script's `preprocessor` function, "
        "runs on it first (without one, the run is as without this option)",
    )


def _read_input(text: str, option: str = "--input") -> dict[str, Any]:
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRun(f"{option} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRun(f"{option} must be a JSON object of names to values")
    return value


def cli_run(args: argparse.Namespace) -> int:
    try:
        workspace_root = _find_workspace(args.workspace, args.target)
        flow = flows.flow_file(args.target, workspace_root)
        if flow is not None:
            event = _read_input(args.trigger_event, "--trigger-event") if args.trigger_event else None
            return flows.cli_run_flow(flow, _read_input(args.input), workspace_root, args.approve, event)
        event = _read_input(args.trigger_event, "--trigger-event") if args.trigger_event else None
        target = resolve_target(args.target, workspace_root)
        workspace = load_workspace(workspace_root)
        code = target.file.read_text(encoding="utf-8")
        call = plan_call(target.language, code, _read_input(args.input), trigger_event=event)
        assert not isinstance(call, CallProblem)  # only a flow step's entrypoint can be refused
        timeout = args.timeout if args.timeout is not None else target.meta.get("timeout")
        requirements = tuple(str(r) for r in target.meta.get("requirements") or ())
        envelope = run_script(
            target.language,
            code,
            call.args,
            resources=workspace.resources,
            variables=workspace.variables,
            context=default_context(target.path, workspace.name),
            state_file=default_state_file(workspace_root, target.path),
            timeout=float(timeout) if timeout else None,
            requirements=requirements,
            entrypoint=call.entrypoint,
            lock=lock_for(target, workspace_root),
        )
    except (InvalidRun, OSError) as exc:
        print(f"kubemill run: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if envelope.error is not None:
        if envelope.error.stack:
            print(envelope.error.stack.rstrip("\n"), file=sys.stderr)
        reason = " ".join(envelope.error.message.split())
        print(f"kubemill run: {envelope.error.name}: {reason}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(envelope.result, indent=2))
    return 0
