"""Checks made before a flow runs: its input against its schema, and the flow itself (`validate_flow`).

`validate_flow` is what the Flow controller reports in the Flow's `Ready` condition, each problem with the id
of the step it concerns: a module shape the models reject, duplicate step ids, a script or subflow path that
does not exist, an expression that does not parse (checked by compiling it, never running it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import pydantic
from jsonschema.exceptions import best_match

from kubemill.engine.expressions import Evaluator, QuickJSEvaluator
from kubemill.models.openflow import (
    BranchOne,
    FlowModule,
    FlowValue,
    ForloopFlow,
    OpenFlow,
    PathFlow,
    PathScript,
    RawScript,
    WhileloopFlow,
    walk_modules,
)
from kubemill.models.openflow_parts import InputTransform, JavascriptTransform, OpenFlowModel
from kubemill.signatures import PREPROCESSOR_LANGUAGES, SignatureError, derive_schema


@dataclass(frozen=True)
class Problem:
    """Something wrong with a flow, and the step it concerns (None for the flow as a whole)."""

    step_id: str | None
    message: str


def input_problem(schema: Mapping[str, Any] | None, args: Mapping[str, Any]) -> str | None:
    """Why `args` do not satisfy the flow's input schema (naming the field), or None."""
    if not schema:
        return None
    validator_class = jsonschema.validators.validator_for(schema)
    error = best_match(
        validator_class(schema, format_checker=validator_class.FORMAT_CHECKER).iter_errors(args)
    )
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path)
    return f"invalid input at {where}: {error.message}" if where else f"invalid input: {error.message}"


def _expressions(module: FlowModule) -> Iterator[tuple[str, str]]:
    """(what, expression) for every JavaScript expression of one step (not of the steps inside it)."""

    def transform(what: str, t: InputTransform | None) -> Iterator[tuple[str, str]]:
        if isinstance(t, JavascriptTransform):
            yield what, t.expr

    value = module.value
    if isinstance(value, PathScript | RawScript | PathFlow):
        for name, t in value.input_transforms.items():
            yield from transform(f"input {name}", t)
    if isinstance(value, ForloopFlow):
        yield from transform("iterator", value.iterator)
    if isinstance(value, ForloopFlow | WhileloopFlow):
        yield from transform("parallelism", value.parallelism)
    if isinstance(value, BranchOne):
        for index, branch in enumerate(value.branches):
            yield f"branch {index} expr", branch.expr
    yield from transform("sleep", module.sleep)
    yield from transform("timeout", module.timeout)
    for what, cond in (
        ("skip_if", module.skip_if),
        ("stop_after_if", module.stop_after_if),
        ("stop_after_all_iters_if", module.stop_after_all_iters_if),
    ):
        if cond is not None:
            yield what, cond.expr
    if module.retry is not None and module.retry.retry_if is not None:
        yield "retry_if", module.retry.retry_if.expr


UNSUPPORTED_FIELDS = {
    "concurrency_key": "a custom concurrency key is not supported by kubemill (`concurrent_limit` counts the "
    "runs of this flow); remove it",
}
"""Fields Windmill knows and kubemill refuses rather than ignore (docs/decisions.md says why)."""

_MODULE_REFUSED = {
    "priority": "job priorities are not supported by kubemill (runs are scheduled by Kubernetes); remove it",
    "delete_after_use": "`delete_after_use` is not supported by kubemill (a step's run, args and result "
    "stay until the FlowRun is deleted); remove it",
}
"""Step fields Windmill's Enterprise edition acts on; kubemill refuses them rather than ignore them."""
_WORKER_TAGS = ("tag", "tag_override")

_STEP_CONCURRENCY = ("concurrent_limit", "concurrency_time_window_s", "custom_concurrency_key")
_CACHED_KINDS = (PathScript, RawScript, PathFlow)

# YAML 1.1 (PyYAML, the API server's YAML) reads these unquoted keys as booleans.
_YAML_BOOLEANS = {
    "false": ("n", "no", "off", "false"),
    "true": ("y", "yes", "on", "true"),
}


def preprocessor_problems(flow: OpenFlow, script_languages: Mapping[str, str] | None = None) -> list[Problem]:
    """Windmill runs a flow's `preprocessor_module` through its script's `preprocessor` function, which only
    Python and TypeScript scripts have: another step type, another language, or (inline) a script without a
    `preprocessor` is refused. `script_languages`: the language of each Script known, for `script` steps."""
    module = flow.value.preprocessor_module
    if module is None:
        return []
    step = module.value
    if not isinstance(step, RawScript | PathScript):
        return [
            Problem(
                module.id,
                f"preprocessor_module: a {step.type} step cannot be a preprocessor (Windmill runs a script's "
                "`preprocessor` function: use a script or rawscript step)",
            )
        ]
    language = step.language if isinstance(step, RawScript) else (script_languages or {}).get(step.path)
    if language is None:
        return []
    language = "deno" if language == "typescript" else language
    if language not in PREPROCESSOR_LANGUAGES:
        return [
            Problem(
                module.id,
                f"preprocessor_module: a {language} script cannot be a preprocessor (Windmill's "
                "preprocessors are Python or TypeScript: deno, bun)",
            )
        ]
    if isinstance(step, RawScript):
        try:
            derive_schema(language, step.content, "preprocessor")
        except SignatureError as exc:
            if str(exc).startswith("no `"):  # a script that does not parse is reported when it runs
                return [
                    Problem(
                        module.id,
                        "preprocessor_module: the script defines no `preprocessor` function (Windmill calls "
                        "`preprocessor(event)` for this step, not `main`)",
                    )
                ]
    return []


def field_problems(flow: OpenFlow) -> list[Problem]:
    """Fields kubemill would otherwise accept and not act on: each refused with a message naming it."""
    value = flow.value
    problems = preprocessor_problems(flow) + [
        Problem(None, f"{name}: {why}") for name, why in UNSUPPORTED_FIELDS.items() if getattr(value, name)
    ]
    if value.priority is not None:
        problems.append(Problem(None, f"priority: {_MODULE_REFUSED['priority']}"))
    for module in value.all_modules():
        if module.cache_ttl is not None and not isinstance(module.value, _CACHED_KINDS):
            problems.append(
                Problem(
                    module.id,
                    f"cache_ttl: only script, rawscript and flow steps are cached, not a {module.value.type}",
                )
            )
        problems.extend(
            Problem(module.id, f"{name}: {why}")
            for name, why in _MODULE_REFUSED.items()
            if getattr(module, name) is not None
        )
        problems.extend(
            Problem(
                module.id,
                f"{name}: worker tags do not apply in kubemill (runner pods are placed by Kubernetes; a "
                "Script's spec.runner sets image and resources); remove it",
            )
            for name in _WORKER_TAGS
            if getattr(module.value, name, None)
        )
        if isinstance(module.value, RawScript):
            problems.extend(
                Problem(
                    module.id,
                    f"{name}: per-step concurrency limits are not supported by kubemill (use the flow's "
                    "`concurrent_limit`); remove it",
                )
                for name in _STEP_CONCURRENCY
                if getattr(module.value, name) is not None
            )
        if isinstance(module.value, WhileloopFlow) and module.value.parallel:
            problems.append(
                Problem(
                    module.id, "parallel: a whileloopflow runs its iterations one after another; remove it"
                )
            )
    return problems


ACCEPTED_KEYS: Mapping[type, Mapping[str, str]] = {
    OpenFlow: {
        "ws_error_handler_muted": "Windmill's workspace error handler; kubemill has none: always muted",
        "visible_to_runner_only": "who may see the flow in Windmill's UI; in kubemill RBAC decides",
    },
    FlowValue: {"chat_input_enabled": "how Windmill's UI asks for the input (a chat box); not the run's"},
    RawScript: {"assets": "what Windmill's asset graph shows a step reads and writes; not the run's"},
}
"""Keys Windmill exports that kubemill accepts deliberately although they change nothing about a run (each
with why); any other key the models do not know is refused (`unknown_key_problems`)."""

_UNKNOWN_WHY = {
    "tag": "worker tags do not apply in kubemill (runner pods are placed by Kubernetes; a Script's "
    "spec.runner sets image and resources); remove it",
    "dedicated_worker": "dedicated workers are a Windmill Enterprise feature (kubemill runs a pod per "
    "step); remove it",
    "squash": "squashing a loop's iterations into one job is not supported (each iteration is a run); "
    "remove it",
}
_UNKNOWN = "not a key kubemill knows, so it would be ignored: check its spelling, or remove it"


def unknown_key_problems(flow: OpenFlow) -> list[Problem]:
    """Every key of the document no model knows (they would be ignored), with its path, e.g.
    `value.modules[0].value.parralel`; the keys of `ACCEPTED_KEYS` excepted."""
    problems: list[Problem] = []

    def visit(node: object, where: str, step: str | None) -> None:
        if isinstance(node, OpenFlowModel):
            step = node.id if isinstance(node, FlowModule) else step
            accepted = ACCEPTED_KEYS.get(type(node), {})
            for key in node.model_extra or {}:
                if key not in accepted:
                    why = _UNKNOWN_WHY.get(key, _UNKNOWN)
                    problems.append(Problem(step, f"{where}{key}: {why}"))
            for name, info in type(node).model_fields.items():
                visit(getattr(node, name), f"{where}{info.alias or name}.", step)
        elif isinstance(node, tuple | list):
            for index, item in enumerate(node):
                visit(item, f"{where[:-1]}[{index}].", step)
        elif isinstance(node, Mapping):
            for key, item in node.items():
                visit(item, f"{where}{key}.", step)

    visit(flow, "", None)
    return problems


def script_parameters(language: str, code: str) -> tuple[str, ...] | None:
    """The parameter names of a script's `main`, or None when they cannot be read (the run says why)."""
    try:
        schema = derive_schema("deno" if language == "typescript" else language, code)
    except SignatureError:
        return None
    properties = schema.get("properties") or {}
    return tuple(properties)


def input_key_problems(
    flow: OpenFlow, script_params: Mapping[str, Collection[str]] | None = None
) -> list[Problem]:
    """`input_transforms` keys that name no parameter of the step's script (inline scripts always; a
    `script` step when `script_params` knows its path)."""
    problems: list[Problem] = []
    for module in flow.value.all_modules():
        step = module.value
        params: Collection[str] | None = None
        if not isinstance(step, RawScript | PathScript):
            continue
        if isinstance(step, RawScript):
            params = script_parameters(step.language, step.content)
        elif script_params is not None:
            params = script_params.get(step.path)
        if params is None:
            continue
        for key in step.input_transforms:
            if key in params:
                continue
            names = ", ".join(params) or "none"
            message = (
                f"input_transforms key {key!r} is not a parameter of the script (its parameters: {names})"
            )
            spellings = [s for s in _YAML_BOOLEANS.get(key, ()) if s in params]
            if spellings:
                message += (
                    f"; YAML reads an unquoted {spellings[0]} as {key}: quote the key ('{spellings[0]}')"
                )
            problems.append(Problem(module.id, message))
    return problems


def admission_problems(
    document: Mapping[str, Any],
    script_params: Mapping[str, Collection[str]] | None = None,
    script_languages: Mapping[str, str] | None = None,
) -> list[Problem]:
    """What refuses a Flow document when it is applied, without I/O or expressions: its shape, refused
    fields, unknown keys, input_transforms keys (`script_params`: the parameters of the Scripts known), a
    preprocessor step's language (`script_languages`: the Scripts known)."""
    try:
        flow = OpenFlow.model_validate(document)
    except pydantic.ValidationError as exc:
        return [_shape_problem(document, error) for error in exc.errors()]
    problems = field_problems(flow) + unknown_key_problems(flow) + input_key_problems(flow, script_params)
    return problems + _script_preprocessor_problems(flow, script_languages)


def _script_preprocessor_problems(
    flow: OpenFlow, script_languages: Mapping[str, str] | None
) -> list[Problem]:
    """A `script` step used as the preprocessor, checked once its Script's language is known (an inline one
    is checked by `field_problems` already)."""
    pre = flow.value.preprocessor_module
    if script_languages is None or pre is None or not isinstance(pre.value, PathScript):
        return []
    return preprocessor_problems(flow, script_languages)


def describe(problems: Collection[Problem]) -> str:
    """Problems as one message, each with its step (as the Flow's Ready condition says them)."""
    return "; ".join(f"step {p.step_id}: {p.message}" if p.step_id else p.message for p in problems)


def validate_flow(
    flow: OpenFlow | Mapping[str, Any],
    known_script_paths: Collection[str],
    known_flow_paths: Collection[str] | None = None,
    evaluator: Evaluator | None = None,
    script_params: Mapping[str, Collection[str]] | None = None,
    script_languages: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Every problem found in `flow` (an OpenFlow model, or the raw document, which is parsed first);
    `script_languages` (path -> language) checks a `script` step used as the preprocessor."""
    if not isinstance(flow, OpenFlow):
        document = flow
        try:
            flow = OpenFlow.model_validate(document)
        except pydantic.ValidationError as exc:
            return [_shape_problem(document, error) for error in exc.errors()]
    evaluator = evaluator or QuickJSEvaluator()
    problems = field_problems(flow) + unknown_key_problems(flow) + input_key_problems(flow, script_params)
    problems += _script_preprocessor_problems(flow, script_languages)
    value = flow.value
    for module in value.all_modules():
        step = module.value
        if isinstance(step, PathScript) and step.path not in known_script_paths:
            problems.append(Problem(module.id, f"unknown script path {step.path!r}"))
        if isinstance(step, PathFlow) and known_flow_paths is not None and step.path not in known_flow_paths:
            problems.append(Problem(module.id, f"unknown flow path {step.path!r}"))
        if isinstance(step, BranchOne):
            problems.extend(
                Problem(module.id, f"branch {i} has an empty expr")
                for i, b in enumerate(step.branches)
                if not b.expr
            )
        ends = isinstance(step, WhileloopFlow) and (
            module.stop_after_if is not None or any(m.stop_after_if for m in walk_modules(step.modules))
        )
        if isinstance(step, WhileloopFlow) and not ends:
            problems.append(Problem(module.id, "whileloopflow without stop_after_if never ends"))
        for what, expr in _expressions(module):
            error = evaluator.syntax_error(expr)
            if error is not None:
                problems.append(Problem(module.id, f"{what}: {error}"))
    return problems


def _shape_problem(document: Mapping[str, Any], error: Any) -> Problem:
    """A parse error as a Problem, attributed to the innermost step (a mapping with an `id`) on its path."""
    loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    step: str | None = None
    node: Any = document
    for part in loc:
        if isinstance(node, Mapping) and isinstance(node.get("id"), str):
            step = node["id"]
        if (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        else:
            break
    if isinstance(node, Mapping) and isinstance(node.get("id"), str):
        step = node["id"]
    if step is None and "step '" in message:
        step = message.split("step '", 1)[1].split("'", 1)[0]
    where = ".".join(str(p) for p in loc)
    return Problem(step, f"{where}: {message}" if where else message)
