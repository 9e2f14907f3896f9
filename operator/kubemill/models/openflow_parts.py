"""The parts of an OpenFlow step that are not its module value: the base of every OpenFlow model, input
transforms (`StaticTransform`, `JavascriptTransform`, and a bare number read as a static value) and the step
options (`Retry` with its delays and `retry_if`, `StopAfterIf`, `SkipIf`, `Suspend` with its `ResumeForm`,
`Mock`), which Script and Schedule specs reuse. `kubemill.models.openflow` builds the document on these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    WithJsonSchema,
    model_validator,
)

LANGUAGES = ("python3", "deno", "bun", "go", "bash", "typescript")
"""Languages a kubemill runner executes (`typescript` means `deno`)."""

Number = int | float
"""A JSON number, kept as written (an int stays an int)."""

ScriptLanguage = Literal["python3", "deno", "bun", "go", "bash", "typescript"]


class OpenFlowModel(BaseModel):
    """Base of every OpenFlow model: frozen, snake_case, and keeping fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def to_document(self) -> dict[str, Any]:
        """The model as plain data, only the fields that were given (a parsed flow reads back as written)."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


# --- input transforms ------------------------------------------------------------------------------------


class StaticTransform(OpenFlowModel):
    """A literal input value."""

    type: Literal["static"]
    value: JsonValue = None


class JavascriptTransform(OpenFlowModel):
    """An input computed by a JavaScript expression over `flow_input`, `results`, `previous_result`, ..."""

    type: Literal["javascript"]
    expr: str = ""


InputTransform = Annotated[StaticTransform | JavascriptTransform, Field(discriminator="type")]


def _number_as_static(value: object) -> object:
    """Windmill accepts a bare number for `sleep`, `timeout` and `parallelism`: read it as a static value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"type": "static", "value": value}
    return value


NumberTransform = Annotated[
    InputTransform,
    BeforeValidator(_number_as_static),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "object"}],
            "description": "a number, or an input transform that computes one",
        }
    ),
]
InputTransforms = Mapping[str, InputTransform]


# --- step options ----------------------------------------------------------------------------------------


class ConstantDelay(OpenFlowModel):
    """`attempts` retries, `seconds` apart."""

    attempts: int = Field(default=0, ge=0)
    seconds: int = Field(default=0, ge=0)


class ExponentialDelay(OpenFlowModel):
    """`attempts` retries; the delay before retry n is `multiplier * seconds^(n+1)` +/- `random_factor`%."""

    attempts: int = Field(default=0, ge=0)
    multiplier: int = Field(default=1, ge=0)
    seconds: int = Field(default=0, ge=0)
    random_factor: int | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _base_must_be_positive(self) -> ExponentialDelay:
        if self.attempts > 0 and self.seconds < 1:
            raise ValueError("exponential retry: seconds (the base of the backoff) must be at least 1")
        return self


class RetryIf(OpenFlowModel):
    """Retry only when this expression over `result` (the error) is true."""

    expr: str


class Retry(OpenFlowModel):
    """Windmill's retry object: constant attempts first, then exponential ones."""

    constant: ConstantDelay | None = None
    exponential: ExponentialDelay | None = None
    retry_if: RetryIf | None = None

    @property
    def max_attempts(self) -> int:
        """How many retries in total (not counting the first attempt)."""
        return (self.constant.attempts if self.constant else 0) + (
            self.exponential.attempts if self.exponential else 0
        )


class StopAfterIf(OpenFlowModel):
    """Stop the flow (or a loop) after this step when `expr` is true."""

    expr: str
    skip_if_stopped: bool = False
    error_message: str | None = None
    error_include_result: bool = False
    """With `error_message`: the stopping step's result goes into the error as `result`."""


class SkipIf(OpenFlowModel):
    """Skip this step when `expr` is true."""

    expr: str


class ResumeForm(OpenFlowModel):
    """The form an approver fills in; its answers are the resume payload."""

    schema_: Mapping[str, JsonValue] | None = Field(default=None, alias="schema")

    model_config = ConfigDict(populate_by_name=True)


class Suspend(OpenFlowModel):
    """Windmill's approval form: the flow waits for `required_events` approvals or `timeout` seconds."""

    required_events: int | None = Field(default=None, ge=1)
    timeout: int | None = Field(default=None, ge=0)
    resume_form: ResumeForm | None = None
    user_auth_required: bool | None = None
    user_groups_required: InputTransform | None = None
    self_approval_disabled: bool | None = None
    hide_cancel: bool | None = None
    continue_on_disapprove_timeout: bool | None = None


class Mock(OpenFlowModel):
    """Return `return_value` instead of running the step."""

    enabled: bool = False
    return_value: JsonValue = None
