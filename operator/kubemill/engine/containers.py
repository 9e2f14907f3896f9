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

from kubemill.engine.state import RunError, StepRecord
from kubemill.engine.walk import RUNNING, Outcome, Scope, StepFailed, Walk, replace_record
from kubemill.models.openflow import BranchAll, BranchOne, FlowModule, ForloopFlow, WhileloopFlow

MAX_WHILE_ITERATIONS = 10_000
"""A whileloopflow that never stops fails after this many iterations instead of running forever."""


def is_loop(module: FlowModule) -> bool:
    return isinstance(module.value, ForloopFlow | WhileloopFlow)


def run_container(walk: Walk, module: FlowModule, scope: Scope, path: str) -> Outcome | None:
    """Run `module` if it contains steps; None for leaves."""
    value = module.value
    if not isinstance(value, BranchOne | BranchAll | ForloopFlow | WhileloopFlow):
        return None
    record = walk.enter(module, scope, path)
    if isinstance(record, Outcome):
        return record
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
        assert outcome.error is not None
        return walk.fail(module, path, record, outcome.error, retryable=False)
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
    return walk.sequence(modules, scope)


def branch_all(walk: Walk, value: BranchAll, scope: Scope, path: str) -> Outcome:
    results: list[JsonValue] = []
    running = False
    for branch in value.branches:
        outcome = walk.sequence(branch.modules, Scope(**{**scope.__dict__, "results": scope.results}))
        if outcome.state == "running":
            running = True
            if not value.parallel:
                return RUNNING
            continue
        if outcome.state == "failed":
            assert outcome.error is not None
            if not branch.skip_failure:
                return outcome
            results.append(outcome.error.as_result())
            continue
        if outcome.state == "stopped":
            return outcome
        results.append(outcome.result)
    return RUNNING if running else Outcome("done", results)


def loop(walk: Walk, module: FlowModule, scope: Scope, path: str) -> Outcome:
    value = module.value
    assert isinstance(value, ForloopFlow | WhileloopFlow)
    record = walk.records[path]
    items: list[JsonValue] | None = None
    limit = 1
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
    results, active = list(record.results), list(record.active)
    count = record.count
    broken = False

    def run(index: int) -> Outcome:
        item = items[index] if items is not None else None
        flow_input = {**scope.flow_input, "iter": {"value": item, "index": index}}
        inner = Scope(
            f"{path}/{index}/", flow_input, dict(scope.results), scope.previous, scope.resume, scope.approvers
        )
        return walk.sequence(value.modules, inner)

    def settle_iteration(index: int, outcome: Outcome) -> Outcome | None:
        """Record a finished iteration; an Outcome when it ends the loop."""
        nonlocal broken
        prefix = f"{path}/{index}/"
        for key in [k for k in walk.records if k.startswith(prefix)]:
            del walk.records[key]
        active.remove(index)
        if outcome.state == "failed":
            assert outcome.error is not None
            if not value.skip_failures:
                return outcome
            results[index] = outcome.error.as_result()
            return None
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
    walk.records[path] = replace_record(record, results=tuple(results), active=tuple(active), count=count)
    if ended is not None:
        return ended
    if active or (count is not None and len(results) < count) or count is None:
        return RUNNING
    return Outcome("done", list(results))
