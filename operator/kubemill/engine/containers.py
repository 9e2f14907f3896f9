"""Steps that contain steps: branchone, branchall, forloopflow and whileloopflow.

Each keeps one record for itself and runs its body through `Walk.sequence`. Branch bodies share the
enclosing scope (step ids are unique, so `results.<id>` of a step inside a branch is visible after it). A
loop iteration gets its own scope (`flow_input.iter.value` / `.index`, its own `results`) and its own record
prefix `<loop path>/<i>/`; when an iteration ends, its records are dropped and only its compact result is
kept on the loop's record, which is what keeps a long loop's status small. A `stop_after_if` that fires
inside a loop body breaks the loop (Windmill's behaviour); a whileloopflow ends when the loop step's own
`stop_after_if` is true for an iteration's result.
"""

from __future__ import annotations

from pydantic import JsonValue

from kubemill.engine.scope import RUNNING, Outcome, Scope, StepFailed
from kubemill.engine.state import RunError, StepRecord
from kubemill.engine.walk import Walk, is_loop, replace_record
from kubemill.models.openflow import BranchAll, BranchOne, FlowModule, ForloopFlow, WhileloopFlow

MAX_WHILE_ITERATIONS = 10_000
"""A whileloopflow that never stops fails after this many iterations instead of running forever."""


def sequence(walk: Walk, modules: tuple[FlowModule, ...], scope: Scope) -> Outcome:
    """Run steps one after another; stop at the first that is not done. It lives here, with the containers
    that call it for their bodies, so that `walk` (the leaves) does not import this module."""
    last = Outcome("done", scope.previous)
    for module in modules:
        path = scope.path(module.id)
        try:
            outcome = run_container(walk, module, scope, path) or walk.leaf(module, scope, path)
        except StepFailed as failed:
            error = failed.error if failed.error.step else failed.error.model_copy(update={"step": path})
            outcome = walk.fail(module, path, walk.records.get(path), error, retryable=False)
        if outcome.state in ("running", "failed"):
            return outcome
        record = walk.records.get(path)
        scope.results[module.id] = outcome.result
        if not outcome.skipped:
            scope.previous = outcome.result
            last = outcome
        if record is not None and (record.resume is not None or record.approvers):
            scope.resume, scope.approvers = record.resume, record.approvers
            scope.resumes = record.resumes or (record.resume,)
        if outcome.state == "stopped":
            return outcome
    return Outcome("done", last.result)


def run_container(walk: Walk, module: FlowModule, scope: Scope, path: str) -> Outcome | None:
    """Run `module` if it contains steps; None for leaves."""
    value = module.value
    if not isinstance(value, BranchOne | BranchAll | ForloopFlow | WhileloopFlow):
        return None
    record = walk.enter(module, scope, path)
    if isinstance(record, Outcome):
        return record
    if record.phase == "Waiting":  # the delay before a retry of the whole container
        assert record.wake_at is not None
        if walk.now < record.wake_at:
            walk.wake_at(record.wake_at)
            return RUNNING
        record = replace_record(record, phase="Running", wake_at=None)
        walk.records[path] = record
    if record.attempt and not is_loop(module):
        scope = Scope(**{**scope.__dict__, "prefix": inner_prefix(path, record)})
    if isinstance(value, BranchOne):
        outcome = branch_one(walk, value, scope, path, record)
    elif isinstance(value, BranchAll):
        outcome = branch_all(walk, value, scope, path)
    else:
        outcome = loop(walk, module, scope, path)
    if outcome.state == "running" or (outcome.state == "stopped" and not is_loop(module)):
        return outcome
    record = walk.records[path]
    if outcome.state == "failed":
        # Windmill retries a container as a whole (a loop starts again from its first item).
        assert outcome.error is not None
        return walk.fail(module, path, record, outcome.error, retryable=True, result=outcome.result)
    finished = replace_record(record, result=outcome.result, results=(), active=(), finished_at=walk.now)
    return walk.settle(module, scope, path, finished)


def branch_one(walk: Walk, value: BranchOne, scope: Scope, path: str, record: StepRecord) -> Outcome:
    if record.branch is None:
        chosen = -1
        for index, branch in enumerate(value.branches):
            if walk.evaluate(branch.expr, scope, path) is True:
                chosen = index
                break
        record = replace_record(record, branch=chosen)
        walk.records[path] = record
    assert record.branch is not None
    modules = value.default if record.branch < 0 else value.branches[record.branch].modules
    return sequence(walk, modules, scope)


def inner_prefix(path: str, record: StepRecord) -> str:
    """Where the records of the steps inside a container live: beside it on the first attempt (branch
    bodies share the enclosing scope), under `<path>@<attempt>/` on a retry, so the retry's child runs
    get names of their own."""
    return f"{path}@{record.attempt}/"


def branch_all(walk: Walk, value: BranchAll, scope: Scope, path: str) -> Outcome:
    """Every branch; the result is the list of the branches' results. A branch that fails with
    `skip_failure: false` fails the step with that list (the error in the branch's place), once no branch
    runs any more; a `stop_after_if` inside a branch stops the flow with the list."""
    results: list[JsonValue] = []
    running = False
    failure: RunError | None = None
    stop: Outcome | None = None
    for branch in value.branches:
        outcome = sequence(walk, branch.modules, Scope(**{**scope.__dict__, "results": scope.results}))
        if outcome.state == "running":
            running = True
            if not value.parallel:
                return RUNNING
            results.append(None)
            continue
        if outcome.state == "failed":
            assert outcome.error is not None
            results.append(outcome.error.as_result())
            if not branch.skip_failure:
                failure = failure or outcome.error
                if not value.parallel:
                    break
            continue
        results.append(outcome.result)
        if outcome.state == "stopped":
            stop = stop or outcome
            if not value.parallel:
                break
    if running:
        return RUNNING
    if failure is not None:
        return Outcome("failed", results, error=failure)
    if stop is not None:
        return Outcome("stopped", results, stop_skip=stop.stop_skip, stop_error=stop.stop_error)
    return Outcome("done", results)


def loop(walk: Walk, module: FlowModule, scope: Scope, path: str) -> Outcome:  # noqa: C901, PLR0915
    value = module.value
    assert isinstance(value, ForloopFlow | WhileloopFlow)
    record = walk.records[path]
    items: list[JsonValue] | None = None
    limit = 1
    parallel = isinstance(value, ForloopFlow) and value.parallel
    if isinstance(value, ForloopFlow):
        iterated = walk.transform(value.iterator, scope, path)
        if not isinstance(iterated, list):
            message = f"the iterator of {module.id} must give an array, got {type(iterated).__name__}"
            raise StepFailed(RunError(name="InvalidIterator", message=message, step=path))
        items = iterated
        if record.count is None:
            record = replace_record(record, count=len(items))
        if value.parallel:
            parallelism = walk.number(value.parallelism, scope, path, "parallelism")
            limit = max(1, int(parallelism)) if parallelism else max(1, len(items))
    results, active, failed = list(record.results), list(record.active), list(record.failed)
    count = record.count
    broken = False
    base = inner_prefix(path, record) if record.attempt else f"{path}/"

    def run(index: int) -> Outcome:
        item = items[index] if items is not None else None
        flow_input = {**scope.flow_input, "iter": {"value": item, "index": index}}
        inner = Scope(
            f"{base}{index}/", flow_input, dict(scope.results), scope.previous, scope.resume, scope.approvers
        )
        return sequence(walk, value.modules, inner)

    def settle_iteration(index: int, outcome: Outcome) -> Outcome | None:
        """Record a finished iteration; an Outcome when it ends the loop."""
        nonlocal broken
        prefix = f"{base}{index}/"
        for key in [k for k in walk.records if k.startswith(prefix)]:
            del walk.records[key]
        active.remove(index)
        if outcome.state == "failed":
            assert outcome.error is not None
            results[index] = outcome.error.as_result()
            if value.skip_failures:
                return None
            failed.append(index)
            if parallel:
                return None  # the other iterations finish first; the loop fails with every result
            return Outcome("failed", results[: index + 1], error=outcome.error)
        results[index] = outcome.result
        if outcome.state == "stopped":
            broken = True
        elif (isinstance(value, WhileloopFlow) and module.stop_after_if is not None) or (
            isinstance(value, ForloopFlow) and module.stop_after_if is not None
        ):
            result = walk.resolve(outcome.result)
            broken = walk.evaluate(module.stop_after_if.expr, scope, path, result=result) is True
        return None

    ended: Outcome | None = None
    for index in sorted(active):
        outcome = run(index)
        if outcome.state != "running":
            ended = settle_iteration(index, outcome) or ended
    while ended is None and not broken and len(active) < limit and (count is None or len(results) < count):
        if count is None and len(results) >= MAX_WHILE_ITERATIONS:
            message = (
                f"{module.id} ran {MAX_WHILE_ITERATIONS} iterations without its stop_after_if becoming true"
            )
            ended = Outcome("failed", error=RunError(name="TooManyIterations", message=message, step=path))
            break
        index = len(results)
        results.append(None)
        active.append(index)
        outcome = run(index)
        if outcome.state != "running":
            ended = settle_iteration(index, outcome)
    if broken:
        count = len(results)
    walk.records[path] = replace_record(
        record, results=tuple(results), active=tuple(active), count=count, failed=tuple(sorted(failed))
    )
    if ended is not None:
        return ended
    if active or (count is not None and len(results) < count) or count is None:
        return RUNNING
    if failed:
        first = results[min(failed)]
        assert isinstance(first, dict) and isinstance(first.get("error"), dict)  # noqa: PT018 - one fact
        return Outcome("failed", list(results), error=RunError.model_validate(first["error"]))
    return Outcome("done", list(results))
