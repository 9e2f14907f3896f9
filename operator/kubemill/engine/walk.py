"""One pass over a flow's module tree: from the stored step records and the observations, what happens next.

`advance()` re-derives the whole state of a run on every call (like Tekton's pipeline-run state): it walks the
modules in order, and for each step reads its record, looks at its child run, starts what can start, and
records what finished. A `Walk` holds the working copy of the records and collects actions; nothing is
written anywhere else. Leaves (script, rawscript, flow, identity, approval) live here; branches, loops and
`sequence` (which runs a body, so it calls both) in `containers.py`, which imports this module and never the
reverse. The life of a step: started -> (child run, retries) -> result -> (approval) -> (sleep) ->
stop_after_if -> done. Outcomes, scopes and expression evaluation are in `scope.py` (a `Walk` is its
`Expressions` plus the records and actions of the pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import JsonValue

from kubemill.engine import cache
from kubemill.engine.actions import (
    Action,
    AwaitApproval,
    CacheEntry,
    CreateRun,
    DeleteRun,
    RawScriptSource,
)
from kubemill.engine.approvals import decide, pending_approval
from kubemill.engine.naming import child_run_name
from kubemill.engine.retry import retry_delay
from kubemill.engine.scope import RUNNING, Expressions, Outcome, Scope
from kubemill.engine.state import (
    DONE_STEP_PHASES,
    ApprovalRecord,
    PendingApproval,
    RunError,
    StepRecord,
    store_result,
)
from kubemill.models.openflow import (
    Approval,
    FlowModule,
    ForloopFlow,
    Identity,
    PathFlow,
    PathScript,
    RawScript,
    WhileloopFlow,
    walk_modules,
)


@dataclass
class Walk(Expressions):
    """The working state of one `advance()` call."""

    now: datetime
    records: dict[str, StepRecord]
    ledger: tuple[ApprovalRecord, ...]
    user_states: dict[str, JsonValue] = field(default_factory=dict)
    """The flow user states; a child's are folded in once, when the step first sees it finished."""
    actions: list[Action] = field(default_factory=list)
    cached: dict[str, CacheEntry] = field(default_factory=dict)
    """`cache_ttl` results stored in this pass (a later step of the same pass takes them already)."""
    wakes: list[datetime] = field(default_factory=list)
    pending: list[PendingApproval] = field(default_factory=list)

    def wake_at(self, when: datetime) -> None:
        self.wakes.append(when)

    # --- sequences -----------------------------------------------------------------------------------------

    def done_outcome(self, module: FlowModule, record: StepRecord) -> Outcome:
        """The outcome of a step whose record says it is over."""
        if record.phase == "Skipped" and not record.stopped:
            return Outcome("done", None, skipped=True)
        if record.phase == "Failed":
            if module.continue_on_error and record.error is not None:
                return Outcome("done", record.error.as_result())
            return Outcome("failed", record.result, error=record.error)
        if record.stopped:
            return self.stop_outcome(module, record)
        return Outcome("done", record.result)

    def stop_outcome(self, module: FlowModule, record: StepRecord) -> Outcome:
        stop = module.stop_after_all_iters_if if is_loop(module) else module.stop_after_if
        error = None
        if stop is not None and stop.error_message is not None:
            message = stop.error_message or f"flow stopped early by step {module.id}"
            result = self.resolve(record.result) if stop.error_include_result else None
            error = RunError(name="EarlyStopError", message=message, step=module.id, result=result)
        return Outcome(
            "stopped", record.result, stop_skip=bool(stop and stop.skip_if_stopped), stop_error=error
        )

    # --- leaves --------------------------------------------------------------------------------------------

    def enter(self, module: FlowModule, scope: Scope, path: str) -> StepRecord | Outcome:
        """The step's record when it has work to do; its outcome when it is over, skipped, or only waiting
        for approvals or a sleep after its work."""
        record = self.records.get(path)
        if record is not None and record.phase in DONE_STEP_PHASES:
            return self.done_outcome(module, record)
        if record is None:
            started = self.start(module, scope, path)
            if isinstance(started, Outcome):
                return started
            record = started
        if record.phase == "Suspended" or (record.phase == "Waiting" and record.finished_at is not None):
            return self.settle(module, scope, path, record)
        return record

    def leaf(self, module: FlowModule, scope: Scope, path: str) -> Outcome:
        record = self.enter(module, scope, path)
        if isinstance(record, Outcome):
            return record
        value = module.value
        if isinstance(value, Identity | Approval):
            result = scope.previous if isinstance(value, Identity) else None
            return self.settle(
                module, scope, path, replace_record(record, result=result, finished_at=self.now)
            )
        return self.child_step(module, scope, path, record)

    def start(self, module: FlowModule, scope: Scope, path: str) -> StepRecord | Outcome:
        """A step seen for the first time: skip_if, mock, or a fresh record."""
        if module.skip_if is not None and self.evaluate(module.skip_if.expr, scope, path) is True:
            self.records[path] = StepRecord(phase="Skipped", started_at=self.now, finished_at=self.now)
            return Outcome("done", None, skipped=True)
        record = StepRecord(phase="Running", started_at=self.now)
        if module.mock is not None and module.mock.enabled:
            record = replace_record(record, result=module.mock.return_value, finished_at=self.now)
            self.records[path] = record
            return self.settle(module, scope, path, record)
        self.records[path] = record
        return record

    def child_step(self, module: FlowModule, scope: Scope, path: str, record: StepRecord) -> Outcome:
        if record.phase == "Waiting":  # retry delay
            assert record.wake_at is not None
            if self.now < record.wake_at:
                self.wake_at(record.wake_at)
                return RUNNING
        name = child_run_name(self.obs.run_name, path, record.attempt)
        child = self.obs.children.get(name)
        if child is None or record.run != name:
            return self.create_child(module, scope, path, record, name)
        if child.phase in ("Pending", "Running", "Suspended"):
            if record.wake_at is not None and self.now >= record.wake_at:
                self.actions.append(DeleteRun(kind=child_kind(module), name=name, reason="step timed out"))
                error = RunError(name="TimeoutError", message=f"step {module.id} timed out", step=path)
                return self.fail(module, path, record, error, retryable=True)
            if record.wake_at is not None:
                self.wake_at(record.wake_at)
            return RUNNING
        if child.flow_user_states is not None and child.phase in ("Succeeded", "Failed"):
            self.user_states.update(child.flow_user_states)
        if child.phase == "Succeeded":
            if module.cache_ttl:  # Windmill: the next same call within cache_ttl seconds takes this result
                entry = cache.store(
                    self.cache_key(module, scope, path), child.result, module.cache_ttl, self.now
                )
                self.actions.append(entry)
                self.cached[entry.key] = CacheEntry(result=child.result, expires_at=entry.expires_at)
            stored = store_result(child.result, name)
            return self.settle(
                module, scope, path, replace_record(record, result=stored, finished_at=self.now)
            )
        error = child.error or RunError(name=child.phase, message=f"child run {name} {child.phase.lower()}")
        return self.fail(module, path, record, error.model_copy(update={"step": path}), retryable=True)

    def is_preprocessor(self, module: FlowModule) -> bool:
        return module is self.flow.value.preprocessor_module

    def step_args(self, module: FlowModule, scope: Scope, path: str) -> dict[str, JsonValue]:
        """A step's args: its input_transforms. Windmill hands the preprocessor step the flow's args (the
        trigger's `{"event": ...}`) whatever its input_transforms; kubemill evaluates them on top."""
        value = module.value
        assert isinstance(value, PathScript | RawScript | PathFlow)
        base = dict(scope.flow_input) if self.is_preprocessor(module) else {}
        return base | {key: self.transform(t, scope, path) for key, t in value.input_transforms.items()}

    def cache_key(self, module: FlowModule, scope: Scope, path: str) -> str:
        value = module.value
        assert isinstance(value, PathScript | RawScript | PathFlow)
        return cache.step_key(value, self.step_args(module, scope, path))

    def create_child(
        self, module: FlowModule, scope: Scope, path: str, record: StepRecord, name: str
    ) -> Outcome:
        value = module.value
        assert isinstance(value, PathScript | RawScript | PathFlow)
        args = self.step_args(module, scope, path)
        key = cache.step_key(value, args) if module.cache_ttl else None
        hit = cache.lookup({**self.obs.cache, **self.cached}, key, self.now) if key else None
        if hit is not None:
            return self.settle(
                module, scope, path, replace_record(record, result=hit.result, finished_at=self.now)
            )
        timeout = self.number(module.timeout, scope, path, "timeout")
        deadline = record.wake_at if record.run is not None and record.phase == "Running" else None
        if deadline is None and timeout:
            deadline = self.now + timedelta(seconds=timeout)
        self.actions.append(
            CreateRun(
                kind=child_kind(module),
                name=name,
                step=path,
                attempt=record.attempt,
                script_path=value.path if isinstance(value, PathScript) else None,
                flow_path=value.path if isinstance(value, PathFlow) else None,
                script=RawScriptSource(
                    language=value.language, content=value.content, path=value.path, lock=value.lock
                )
                if isinstance(value, RawScript)
                else None,
                args=args,
                timeout_seconds=timeout,
                flow_user_states=dict(self.user_states),
                entrypoint="preprocessor" if self.is_preprocessor(module) else "main",
            )
        )
        self.records[path] = replace_record(record, phase="Running", run=name, wake_at=deadline)
        if deadline is not None:
            self.wake_at(deadline)
        return RUNNING

    # --- endings -------------------------------------------------------------------------------------------

    def fail(
        self,
        module: FlowModule,
        path: str,
        record: StepRecord | None,
        error: RunError,
        *,
        retryable: bool,
        result: JsonValue = None,
    ) -> Outcome:
        """The step failed: retry it if its policy says so, else record the failure. `result` is the
        failed step's result when it is more than the error (a loop's or branchall's list, as Windmill
        keeps it)."""
        record = record or StepRecord(phase="Running", started_at=self.now)
        result = error.as_result() if result is None else result
        if retryable:
            delay = retry_delay(module.retry, record.attempt, self.obs.run_name, path)
            retry_if = module.retry.retry_if if module.retry else None
            if delay is not None and retry_if is not None:
                scope = Scope(prefix="", flow_input={}, results={})
                wanted = self.evaluate(retry_if.expr, scope, path, result=error.as_result())
                delay = delay if wanted is True else None
            if delay is not None:
                wake = self.now + timedelta(seconds=delay)
                self.forget_inside(path)
                self.records[path] = replace_record(
                    record,
                    phase="Waiting",
                    attempt=record.attempt + 1,
                    run=None,
                    wake_at=wake,
                    error=error,
                    **_FRESH_CONTAINER,
                )
                self.wake_at(wake)
                return RUNNING
        self.records[path] = replace_record(
            record, phase="Failed", error=error, result=result, finished_at=self.now, wake_at=None
        )
        if module.continue_on_error:
            return Outcome("done", error.as_result())
        return Outcome("failed", result, error=error)

    def forget_inside(self, path: str) -> None:
        """Drop the records of the steps inside the container at `path` (it is about to run again).
        Inside a retried container, record keys carry the attempt (`loop@1/0/step`), so a new attempt's
        children get new names."""
        module = self.modules.get(path.rsplit("/", 1)[-1])
        if module is None:
            return
        prefix = path[: len(path) - len(module.id)]
        inner = {m.id for m in walk_modules(module.children())}
        for key in list(self.records):
            own = key.startswith((f"{path}/", f"{path}@"))
            branch_step = key.startswith(prefix) and key[len(prefix) :].split("/", 1)[0] in inner
            if own or branch_step:
                del self.records[key]

    def settle(self, module: FlowModule, scope: Scope, path: str, record: StepRecord) -> Outcome:
        """A step with a result: wait for approvals, then sleep, then check stop_after_if; then it is done."""
        if record.phase == "Running":
            pending = pending_approval(module, path, self.now)
            if pending is not None:
                record = replace_record(record, phase="Suspended", wake_at=pending.deadline)
                self.records[path] = record
                self.actions.append(
                    AwaitApproval(
                        step=path,
                        approvers=pending.approvers,
                        required_events=pending.required_events,
                        deadline=pending.deadline,
                    )
                )
        if record.phase == "Suspended":
            record_or_outcome = self.approval(module, path, record)
            if isinstance(record_or_outcome, Outcome):
                return record_or_outcome
            record = record_or_outcome
        if record.phase == "Running":
            seconds = self.number(module.sleep, scope, path, "sleep")
            if seconds:
                record = replace_record(
                    record, phase="Waiting", wake_at=self.now + timedelta(seconds=seconds)
                )
        if record.phase == "Waiting":
            assert record.wake_at is not None
            if self.now < record.wake_at:
                self.records[path] = record
                self.wake_at(record.wake_at)
                return RUNNING
        return self.finish_step(module, scope, path, record)

    def approval(self, module: FlowModule, path: str, record: StepRecord) -> StepRecord | Outcome:
        pending = pending_approval(module, path, record.finished_at or self.now)
        assert pending is not None
        pending = pending.model_copy(update={"deadline": record.wake_at})
        verdict = decide(pending, module.id, self.obs.approvals, self.ledger, self.obs.requester, self.now)
        self.ledger = verdict.ledger
        if verdict.payloads:
            record = replace_record(record, resumes=record.resumes + verdict.payloads)
        if verdict.error is not None:
            return self.fail(module, path, record, verdict.error, retryable=False)
        if not verdict.approved:
            self.records[path] = record
            self.pending.append(pending)
            if pending.deadline is not None:
                self.wake_at(pending.deadline)
            return RUNNING
        resume = record.resumes[-1] if record.resumes else verdict.resume
        result = resume if isinstance(module.value, Approval) else record.result
        # One payload is kept as `resume` alone (`resumes` is then `[resume]`).
        resumes = record.resumes if len(record.resumes) > 1 else ()
        return replace_record(
            record,
            phase="Running",
            wake_at=None,
            resume=resume,
            resumes=resumes,
            approvers=verdict.approvers,
            result=result,
        )

    def finish_step(self, module: FlowModule, scope: Scope, path: str, record: StepRecord) -> Outcome:
        stop = module.stop_after_all_iters_if if is_loop(module) else module.stop_after_if
        stopped = False
        if stop is not None:
            stopped = self.evaluate(stop.expr, scope, path, result=self.resolve(record.result)) is True
        phase = "Skipped" if stopped and stop is not None and stop.skip_if_stopped else "Succeeded"
        record = replace_record(record, phase=phase, stopped=stopped, wake_at=None, finished_at=self.now)
        self.records[path] = record
        return self.stop_outcome(module, record) if stopped else Outcome("done", record.result)

    def cancel_children(self, reason: str) -> None:
        """Delete every child run still in flight (the run is over)."""
        modules = self.modules
        for path, record in self.records.items():
            if record.run is None or record.phase != "Running":
                continue
            child = self.obs.children.get(record.run)
            if child is not None and child.phase in ("Pending", "Running", "Suspended"):
                module = modules[path.rsplit("/", 1)[-1]]
                self.actions.append(DeleteRun(kind=child_kind(module), name=record.run, reason=reason))

    @property
    def modules(self) -> dict[str, FlowModule]:
        """Every step of the flow by id (ids are unique in a flow)."""
        return {m.id: m for m in self.flow.value.all_modules()}


_FRESH_CONTAINER: dict[str, object] = {
    "branch": None,
    "count": None,
    "results": (),
    "active": (),
    "failed": (),
    "stopped": False,
}
"""A container's record fields that a retry starts again from."""


def child_kind(module: FlowModule) -> Literal["ScriptRun", "FlowRun"]:
    return "FlowRun" if isinstance(module.value, PathFlow) else "ScriptRun"


def is_loop(module: FlowModule) -> bool:
    return isinstance(module.value, ForloopFlow | WhileloopFlow)


def replace_record(record: StepRecord, **changes: object) -> StepRecord:
    return record.model_copy(update=changes)
