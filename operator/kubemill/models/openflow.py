"""Windmill's OpenFlow document as typed, frozen models: the shape of `Flow.spec.value` and `.schema`.

A `flow.yaml` written for Windmill must parse here unchanged, so field names are Windmill's snake_case names
from `openflow.openapi.yaml`, and fields Windmill knows but kubemill does not act on are kept (not dropped):
every model accepts extra keys and `to_document()` writes them back out. Module types are the exception: a
step whose `value.type` kubemill cannot run is rejected at parse time with a message naming the step id.

Public names (the flow engine builds on these):

- `OpenFlow` — the document: `summary`, `description`, `value: FlowValue`, `schema`.
- `FlowValue` — `modules`, `failure_module`, `preprocessor_module`, `early_return`, `concurrent_limit`, ...
- `FlowModule` — one step: `id`, `value: ModuleValue`, `summary`, `stop_after_if`, `stop_after_all_iters_if`,
  `skip_if`, `sleep`, `timeout`, `retry`, `suspend`, `mock`, `continue_on_error`, `cache_ttl`, ...
- `ModuleValue` — the union discriminated on `type`: `RawScript` (`rawscript`), `PathScript` (`script`),
  `PathFlow` (`flow`), `ForloopFlow` (`forloopflow`), `WhileloopFlow` (`whileloopflow`), `BranchOne`
  (`branchone`, with `Branch`es and `default`), `BranchAll` (`branchall`), `Identity` (`identity`) and the
  brief's `Approval` (`approval`: `approvers`, `timeout`). `MODULE_TYPES` lists the type names.
- In `kubemill.models.openflow_parts`: `InputTransform` — `StaticTransform` (`type: static`, `value`) or
  `JavascriptTransform` (`type: javascript`, `expr`); a bare number where Windmill accepts one (`sleep`,
  `timeout`, `parallelism`) is read as (and written back as) a static transform. `Retry` (`constant:
  ConstantDelay`, `exponential: ExponentialDelay`, `retry_if: RetryIf`), `StopAfterIf`, `SkipIf`, `Suspend`
  (`resume_form: ResumeForm`), `Mock` — also reused by Script and Schedule specs.
- `load_flow_yaml(text)` parses a Windmill `flow.yaml`; `walk_modules(modules)` yields every step of a module
  tree, nested ones included, depth first; `OpenFlow.to_document()` / `FlowValue.to_document()` give back the
  document as plain data, exactly as written (defaults are not filled in).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)

from kubemill.models.openflow_parts import (
    InputTransform,
    InputTransforms,
    Mock,
    Number,
    NumberTransform,
    OpenFlowModel,
    ResumeForm,
    Retry,
    ScriptLanguage,
    SkipIf,
    StopAfterIf,
    Suspend,
)

# --- module values ---------------------------------------------------------------------------------------


class RawScript(OpenFlowModel):
    """A script written inline in the flow."""

    type: Literal["rawscript"]
    content: str
    language: ScriptLanguage
    input_transforms: InputTransforms = Field(default_factory=dict)
    path: str | None = None
    lock: str | None = None
    tag: str | None = None
    concurrent_limit: Number | None = None
    concurrency_time_window_s: Number | None = None
    custom_concurrency_key: str | None = None
    is_trigger: bool | None = None


class PathScript(OpenFlowModel):
    """A Script resource referenced by its Windmill path."""

    type: Literal["script"]
    path: str
    input_transforms: InputTransforms = Field(default_factory=dict)
    hash: str | None = None
    tag_override: str | None = None
    is_trigger: bool | None = None


class PathFlow(OpenFlowModel):
    """A Flow resource run as a subflow."""

    type: Literal["flow"]
    path: str
    input_transforms: InputTransforms = Field(default_factory=dict)


class ForloopFlow(OpenFlowModel):
    """Run `modules` once per item of `iterator` (`flow_input.iter.value` / `.index` inside)."""

    type: Literal["forloopflow"]
    modules: tuple[FlowModule, ...]
    iterator: InputTransform
    skip_failures: bool = True
    parallel: bool = False
    parallelism: NumberTransform | None = None


class WhileloopFlow(OpenFlowModel):
    """Run `modules` until the loop step's own `stop_after_if` is true."""

    type: Literal["whileloopflow"]
    modules: tuple[FlowModule, ...]
    skip_failures: bool = False
    parallel: bool = False
    parallelism: NumberTransform | None = None


class Branch(OpenFlowModel):
    """One branch: `expr` chooses it (branchone); `skip_failure` lets it fail (branchall)."""

    modules: tuple[FlowModule, ...]
    summary: str | None = None
    expr: str = ""
    skip_failure: bool = True
    parallel: bool = True


class BranchOne(OpenFlowModel):
    """Run the first branch whose `expr` is true, else `default`."""

    type: Literal["branchone"]
    branches: tuple[Branch, ...]
    default: tuple[FlowModule, ...] = ()


class BranchAll(OpenFlowModel):
    """Run every branch (in parallel unless `parallel: false`)."""

    type: Literal["branchall"]
    branches: tuple[Branch, ...]
    parallel: bool = True


class Identity(OpenFlowModel):
    """Pass the previous result through (Windmill's placeholder step)."""

    type: Literal["identity"]
    flow: bool | None = None


class Approval(OpenFlowModel):
    """The brief's approval step: wait until listed `approvers` approve, or fail after `timeout` seconds.

    An approver is a user name or `group:<name>`. `required_events` approvals from distinct people are needed.
    """

    type: Literal["approval"]
    approvers: tuple[str, ...] = Field(min_length=1)
    timeout: int | None = Field(default=None, ge=1)
    required_events: int = Field(default=1, ge=1)
    continue_on_disapprove_timeout: bool = False
    self_approval_disabled: bool = False
    resume_form: ResumeForm | None = None


ModuleValue = Annotated[
    RawScript
    | PathScript
    | PathFlow
    | ForloopFlow
    | WhileloopFlow
    | BranchOne
    | BranchAll
    | Identity
    | Approval,
    Field(discriminator="type"),
]

MODULE_TYPES = (
    "rawscript",
    "script",
    "flow",
    "forloopflow",
    "whileloopflow",
    "branchone",
    "branchall",
    "identity",
    "approval",
)
"""Every `value.type` a step may have."""


_EXPECTED_TYPES = ", ".join(MODULE_TYPES)


class FlowModule(OpenFlowModel):
    """One step of a flow."""

    # The API server's twin of `_known_module_type` (carried into the CRD by kubemill.crdgen).
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.value.type in {list(MODULE_TYPES)}",
                    "messageExpression": (
                        '"step \'" + (has(self.id) ? self.id : "?") + "\': unknown module type \'"'
                        " + self.value.type"
                        f' + "\' (expected one of: {_EXPECTED_TYPES})"'
                    ),
                    "message": f"unknown module type (expected one of: {_EXPECTED_TYPES})",
                    "fieldPath": ".value.type",
                }
            ]
        }
    )

    id: str = Field(default="", min_length=1)
    """Windmill lets it be left out: `FlowValue` then gives the step one (`step_1`, ...)."""
    value: ModuleValue
    summary: str | None = None
    stop_after_if: StopAfterIf | None = None
    stop_after_all_iters_if: StopAfterIf | None = None
    skip_if: SkipIf | None = None
    sleep: NumberTransform | None = None
    timeout: NumberTransform | None = None
    cache_ttl: Number | None = None
    delete_after_use: bool | None = None
    mock: Mock | None = None
    suspend: Suspend | None = None
    priority: Number | None = None
    continue_on_error: bool | None = None
    retry: Retry | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_module_type(cls, data: object) -> object:
        """Name the step when its type is unknown (the union's own error would not say which step)."""
        if not isinstance(data, Mapping):
            return data
        step = data.get("id", "?")
        value = data.get("value")
        if not isinstance(value, Mapping):
            raise ValueError(f"step {step!r}: value must be an object with a `type`")
        kind = value.get("type")
        if kind not in MODULE_TYPES:
            raise ValueError(
                f"step {step!r}: unknown module type {kind!r} (expected one of: {_EXPECTED_TYPES})"
            )
        return data

    def children(self) -> tuple[FlowModule, ...]:
        """The steps directly inside this one (loop bodies, every branch, the default branch)."""
        value = self.value
        if isinstance(value, ForloopFlow | WhileloopFlow):
            return value.modules
        if isinstance(value, BranchOne):
            return tuple(m for b in value.branches for m in b.modules) + value.default
        if isinstance(value, BranchAll):
            return tuple(m for b in value.branches for m in b.modules)
        return ()


def walk_modules(modules: Sequence[FlowModule]) -> Iterator[FlowModule]:
    """Every step in `modules` and below, depth first, parents before children."""
    for module in modules:
        yield module
        yield from walk_modules(module.children())


class FlowValue(OpenFlowModel):
    """The flow's steps and the options that apply to the whole flow."""

    modules: tuple[FlowModule, ...]
    failure_module: FlowModule | None = None
    preprocessor_module: FlowModule | None = None
    same_worker: bool | None = None
    concurrent_limit: Number | None = None
    concurrency_key: str | None = None
    concurrency_time_window_s: Number | None = None
    skip_expr: str | None = None
    cache_ttl: Number | None = None
    flow_env: Mapping[str, JsonValue] | None = None
    """Values every expression of the flow sees as `flow_env` (any JSON)."""
    priority: Number | None = None
    early_return: str | None = None

    def all_modules(self) -> Iterator[FlowModule]:
        """Every step, nested ones included, then the preprocessor and failure modules."""
        extra = tuple(m for m in (self.preprocessor_module, self.failure_module) if m is not None)
        yield from walk_modules(self.modules + extra)

    @model_validator(mode="before")
    @classmethod
    def _default_ids(cls, data: object) -> object:
        """Windmill lets a step leave out its `id`: such steps get one (`step_1`, `step_2`, ... in document
        order, skipping ids the flow already uses), the same every time the document is read."""
        if not isinstance(data, Mapping):
            return data
        return default_step_ids(data)

    @model_validator(mode="after")
    def _step_ids_are_unique(self) -> FlowValue:
        seen: set[str] = set()
        for module in self.all_modules():
            if module.id in seen:
                raise ValueError(f"step id {module.id!r} is used more than once; step ids must be unique")
            seen.add(module.id)
        if self.early_return is not None and self.early_return not in {m.id for m in self.modules}:
            raise ValueError(f"early_return names step {self.early_return!r}, which is not a top-level step")
        return self


def _raw_steps(node: object) -> Iterator[dict[str, Any]]:
    """Every step mapping of a raw (unparsed) flow value, depth first, in document order."""
    if isinstance(node, list):
        for item in node:
            yield from _raw_steps(item)
        return
    if not isinstance(node, dict):
        return
    inner = node.get("value")
    if isinstance(inner, dict) and "type" in inner:
        yield node
        node = inner
    for key in ("modules", "default", "failure_module", "preprocessor_module"):
        yield from _raw_steps(node.get(key))
    branches = node.get("branches")
    for branch in branches if isinstance(branches, list) else ():
        if isinstance(branch, dict):
            yield from _raw_steps(branch.get("modules"))


def default_step_ids(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`data` (a raw flow value) with an id given to every step that has none."""
    copy: dict[str, Any] = _deep_copy(data)
    steps = list(_raw_steps(copy))
    if all(isinstance(step.get("id"), str) and step["id"] for step in steps):
        return data
    used = {step["id"] for step in steps if isinstance(step.get("id"), str)}
    counter = 0
    for step in steps:
        if isinstance(step.get("id"), str) and step["id"]:
            continue
        counter += 1
        while f"step_{counter}" in used:
            counter += 1
        step["id"] = f"step_{counter}"
        used.add(step["id"])
    return copy


def _deep_copy(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {key: _deep_copy(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_deep_copy(item) for item in node]
    return node


class OpenFlow(OpenFlowModel):
    """A whole OpenFlow document (`flow.yaml`)."""

    summary: str = ""
    description: str | None = None
    value: FlowValue
    schema_: Mapping[str, JsonValue] | None = Field(default=None, alias="schema")

    model_config = ConfigDict(populate_by_name=True)


def load_flow_yaml(text: str) -> OpenFlow:
    """Parse a Windmill `flow.yaml` (raises `pydantic.ValidationError` or `ValueError`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"flow.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError("a flow.yaml must be a mapping with at least `value.modules`")
    return OpenFlow.model_validate(data)


for _model in (ForloopFlow, WhileloopFlow, Branch, BranchOne, BranchAll):
    _model.model_rebuild()
