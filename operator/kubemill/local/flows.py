"""`kubemill run` for flows: the same engine as the operator, with each step a local process.

A flow is a `<name>.flow/flow.yaml` folder in a Windmill-layout workspace (or a `flow.yaml` file given
directly). `local.driver` calls `advance()` in a loop; each child run it asks for is carried out here:
a `script` step runs the script at that Windmill path from the workspace, a `rawscript` runs its inline
code, a `flow` step runs the subflow the same way, recursively. Steps run one at a time. Nobody can annotate a
local run, so approval steps pass only when named with `--approve STEP` (a step id); any other approval
step fails the run with a message saying so. Progress goes to stderr, the result to stdout (JSON).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic
import yaml

from kubemill.engine import ApprovalEvent, AwaitApproval, ChildObservation, CreateRun, RunError
from kubemill.engine.cache import uses_cache
from kubemill.engine.entrypoints import CallProblem, plan_call
from kubemill.engine.sandbox import IsolatedEvaluator
from kubemill.engine.validation import Problem, field_problems, input_key_problems, unknown_key_problems
from kubemill.local.cache import FileCache
from kubemill.local.driver import Clock, FlowFailed, drive
from kubemill.local.scripts import (
    InvalidRun,
    Workspace,
    default_state_file,
    load_workspace,
    lock_for,
    resolve_target,
    run_script,
    schema_for,
)
from kubemill.models.flows import MAX_SUBFLOW_DEPTH
from kubemill.models.openflow import OpenFlow, PathScript
from kubemill.paths import OutsideWorkspace, confined
from kubemill.runners import RunContext, canonical_language
from kubemill.runners.forkserver import ForkServers
from kubemill.runners.lockfile import LOCKED_LANGUAGES

MAX_DEPTH = MAX_SUBFLOW_DEPTH


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML has it: a 40-step flow.yaml parses in ~5 ms instead of ~150 ms."""


def flow_file(target: str, workspace: Path) -> Path | None:
    """The flow.yaml `target` names (a flow.yaml file, a `.flow` folder, or a Windmill path), or None."""
    given = Path(target)
    if given.is_file() and given.name.endswith("flow.yaml"):
        return given
    for candidate in (given / "flow.yaml", workspace / f"{target.strip('/')}.flow" / "flow.yaml"):
        if candidate.is_file():
            return candidate
    return None


def inline_files(node: Any, folder: Path) -> Any:
    """`wmill sync pull` keeps inline steps' code next to flow.yaml as `!inline <file>`: read them in."""
    if isinstance(node, str) and node.startswith("!inline "):
        try:  # the flow's own folder, where `wmill sync pull` writes them, and nothing outside it
            file = confined(folder, node.removeprefix("!inline ").strip())
        except OutsideWorkspace as exc:
            raise InvalidRun(f"{node!r}: {exc}") from None
        if not file.is_file():
            raise InvalidRun(f"{node!r}: no file {file}")
        return file.read_text(encoding="utf-8")
    if isinstance(node, dict):
        # Keys as the API server stores them: YAML 1.1 reads an unquoted `n:` or `on:` as a boolean, and
        # JSON writes that key as "false"/"true" (validation then names the key and suggests quoting).
        return {_key(key): inline_files(value, folder) for key, value in node.items()}
    if isinstance(node, list):
        return [inline_files(item, folder) for item in node]
    return node


def _key(key: Any) -> Any:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) or key is None else str(key)


def load_flow(file: Path) -> OpenFlow:
    try:
        document = inline_files(yaml.load(file.read_text(encoding="utf-8"), Loader=_YAML_LOADER), file.parent)  # noqa: S506
        flow = OpenFlow.model_validate(document)
    except (yaml.YAMLError, pydantic.ValidationError) as exc:
        raise InvalidRun(f"{file} is not a valid flow: {exc}") from exc
    refuse_problems(file, field_problems(flow) + unknown_key_problems(flow) + input_key_problems(flow))
    return flow


def refuse_problems(file: Path | str, problems: list[Problem]) -> None:
    """InvalidRun naming every problem (and its step), as the Flow's Ready condition does on a cluster."""
    if problems:
        said = "; ".join(f"step {p.step_id}: {p.message}" if p.step_id else p.message for p in problems)
        raise InvalidRun(f"{file} is not a valid flow: {said}")


class LocalFlow:
    """Runs one flow (and its subflows) against a workspace."""

    def __init__(self, workspace_root: Path, approve: Collection[str], log: Any = sys.stderr) -> None:
        self.root = workspace_root
        self.workspace: Workspace = load_workspace(workspace_root)
        self.approve = set(approve)
        self.log = log
        self.user = getpass.getuser()
        self.root_job = str(uuid.uuid4())
        self.schemas: dict[tuple[str, str], dict[str, Any]] = {}
        """Each script's schema, derived once per run (a loop runs the same script many times)."""
        self.early: Any = None
        self.early_sent = False
        """The top flow's `early_return` result, once handed out."""
        self.servers = ForkServers()
        """Warm interpreters for the steps, for the length of the top flow's run."""
        self.evaluator = IsolatedEvaluator()
        """The flows' expressions, in killable worker processes (closed with the top flow's run)."""

    def say(self, message: str) -> None:
        print(f"[kubemill] {message}", file=self.log, flush=True)

    def run(self, flow: OpenFlow, args: dict[str, Any], path: str, depth: int = 0, event: Any = None) -> Any:
        """The flow's result; FlowFailed when it does not succeed. `event`: started as by a trigger."""
        if depth > MAX_DEPTH:
            raise InvalidRun(f"subflows nest deeper than {MAX_DEPTH} (does {path} call itself?)")
        flow_job = str(uuid.uuid4())
        refuse_problems(path, input_key_problems(flow, self.script_params(flow)))
        with contextlib.ExitStack() as stack:
            if depth == 0:
                stack.enter_context(self.servers)
                stack.callback(self.evaluator.close)
            shared = None
            if flow.value.same_worker:
                shared = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kubemill-shared-")))

            def run_step(action: CreateRun) -> Any:
                return self.step(action, path, flow_job, depth, shared)

            run = drive(
                flow,
                args,
                run_step,
                clock=Clock(),
                approve=self.approval,
                run_name=path.replace("/", "-"),
                cache=FileCache() if uses_cache(flow) else None,
                on_early_return=self.early_return if depth == 0 else None,
                trigger_event=event,
                evaluator=self.evaluator,
            )
        if depth == 0:
            self.early, self.early_sent = run.status.early_result, run.status.early_result_sent
        if run.status.phase != "Succeeded":
            raise FlowFailed(run.status.phase, run.status.error, run.status.result)
        return run.status.result

    def early_return(self, result: Any) -> None:
        self.say(f"early_return: a waiting caller gets {json.dumps(result)[:200]}; the flow goes on")

    def script_params(self, flow: OpenFlow) -> dict[str, tuple[str, ...]]:
        """The parameter names of each workspace script the flow's `script` steps name (those found)."""
        found: dict[str, tuple[str, ...]] = {}
        for module in flow.value.all_modules():
            if not isinstance(module.value, PathScript) or module.value.path in found:
                continue
            try:
                target = resolve_target(module.value.path, self.root)
                schema = schema_for(target.language, target.file.read_text(encoding="utf-8"))
            except InvalidRun:
                continue  # the step itself fails with the reason when it runs
            found[module.value.path] = tuple(schema.get("properties") or {})
        return found

    def approval(self, action: AwaitApproval, now: datetime) -> list[ApprovalEvent]:
        step_id = action.step.rsplit("/", 1)[-1]
        if step_id not in self.approve and action.step not in self.approve:
            raise FlowFailed(
                "Suspended",
                RunError(
                    name="NeedsApproval",
                    message=f"step {action.step} waits for approval; run again with --approve {step_id}",
                    step=action.step,
                ),
            )
        # Locally nobody's identity is verified: --approve stands for as many listed approvers as needed.
        users = [a for a in action.approvers if not a.startswith("group:")]
        groups = tuple(a.removeprefix("group:") for a in action.approvers if a.startswith("group:"))
        if self.user in users or not users:
            users = [self.user, *(u for u in users if u != self.user)]
        names = [users[i] if i < len(users) else f"{self.user}-{i}" for i in range(action.required_events)]
        self.say(f"{action.step}: approved with --approve by {self.user}")
        comment = f"--approve by {self.user} in a local run"
        return [
            ApprovalEvent(
                step=action.step, user=name, groups=groups, decision="approve", comment=comment, at=now
            )
            for name in names
        ]

    def step(
        self, action: CreateRun, flow_path: str, flow_job: str, depth: int, shared: Path | None = None
    ) -> Any:
        started = time.monotonic()
        what = action.script_path or action.flow_path or "inline script"
        self.say(
            f"{action.step}: {what} started" + (f" (attempt {action.attempt + 1})" if action.attempt else "")
        )
        if action.kind == "FlowRun":
            assert action.flow_path is not None
            file = flow_file(action.flow_path, self.root)
            if file is None:
                raise InvalidRun(f"step {action.step}: no flow {action.flow_path} in workspace {self.root}")
            outcome: Any = self.run(load_flow(file), dict(action.args), action.flow_path, depth + 1)
        else:
            outcome = self.script(action, flow_path, flow_job, shared)
        phase = outcome.phase if isinstance(outcome, ChildObservation) else "Succeeded"
        self.say(f"{action.step}: {phase.lower()} in {time.monotonic() - started:.2f} s")
        return outcome

    def script(
        self, action: CreateRun, flow_path: str, flow_job: str, shared: Path | None = None
    ) -> ChildObservation:
        context = RunContext(
            workspace=self.workspace.name,
            job_id=str(uuid.uuid4()),
            flow_job_id=flow_job,
            root_flow_job_id=self.root_job,
            flow_path=flow_path,
            flow_step_id=action.step,
            username=self.user,
        )
        timeout = action.timeout_seconds
        meta: Mapping[str, Any] = {}
        lock = None
        if action.script is not None:
            language, code, path = action.script.language, action.script.content, ""
            if action.script.lock and canonical_language(language) in LOCKED_LANGUAGES:
                lock = action.script.lock  # a rawscript step's pinned dependencies, as in the cluster
        else:
            assert action.script_path is not None
            target = resolve_target(action.script_path, self.root)
            language, code, path, meta = (
                target.language,
                target.file.read_text(encoding="utf-8"),
                target.path,
                target.meta,
            )
            timeout = timeout or meta.get("timeout")
            lock = lock_for(target, self.root)
        context = RunContext(**{**context.__dict__, "job_path": path})
        call = plan_call(language, code, action.args, entrypoint=action.entrypoint, step=action.step)
        if isinstance(call, CallProblem):
            return ChildObservation(phase="Failed", error=RunError(name=call.name, message=call.message))
        try:
            schema = self.schemas.get((language, code))
            if schema is None and call.entrypoint == "main":
                schema = self.schemas[(language, code)] = schema_for(language, code)
            envelope = run_script(
                language,
                code,
                dict(call.args),
                schema=schema,
                resources=self.workspace.resources,
                variables=self.workspace.variables,
                context=context,
                state_file=default_state_file(self.root, path) if path else None,
                timeout=float(timeout) if timeout else None,
                requirements=tuple(str(r) for r in meta.get("requirements") or ()),
                shared_dir=shared,
                servers=self.servers,
                env={"KUBEMILL_FLOW_USER_STATES": json.dumps(dict(action.flow_user_states))},
                entrypoint=call.entrypoint,
                lock=lock,
            )
        except InvalidRun as exc:
            return ChildObservation(phase="Failed", error=RunError(name="InvalidRun", message=str(exc)))
        states = envelope.flow_user_states
        if envelope.error is not None:
            error = RunError(
                name=envelope.error.name, message=envelope.error.message, stack=envelope.error.stack
            )
            return ChildObservation(phase="Failed", error=error, flow_user_states=states)
        return ChildObservation(phase="Succeeded", result=envelope.result, flow_user_states=states)


def run_flow_file(
    file: Path, args: dict[str, Any], workspace_root: Path, approve: Collection[str], path: str | None = None
) -> Any:
    """Run the flow in `file` with `args`; its result, or FlowFailed / InvalidRun."""
    runner = LocalFlow(workspace_root, approve)
    return runner.run(load_flow(file), args, path or file.parent.name.removesuffix(".flow"))


def cli_run_flow(
    file: Path,
    args: dict[str, Any],
    workspace_root: Path,
    approve: Collection[str],
    event: dict[str, Any] | None = None,
) -> int:
    """`kubemill run` on a flow: 0 and the result on stdout; or 1, the flow's result on stdout when it has
    one (a failure module's output, a loop's results with the error in place), and a one-line reason on
    stderr. A flow with `early_return` prints that step's result, which is what Windmill hands a caller
    waiting for the run. With `event`, the run is started as a trigger would start it (`--trigger-event`):
    a `preprocessor_module` runs first on it."""
    runner = LocalFlow(workspace_root, approve)
    try:
        result = runner.run(load_flow(file), args, file.parent.name.removesuffix(".flow"), event=event)
    except FlowFailed as exc:
        error = exc.error
        if exc.result is not None:
            print(json.dumps(exc.result, indent=2))
        reason = f"{error.name}: {' '.join(error.message.split())}" if error else exc.phase
        step = f" (step {error.step})" if error is not None and error.step else ""
        print(f"kubemill run: flow {exc.phase.lower()}{step}: {reason}", file=sys.stderr)
        return 1
    if runner.early_sent:
        runner.say("early_return: printing that step's result (the flow ran to its end)")
        result = runner.early
    print(json.dumps(result, indent=2))
    return 0
