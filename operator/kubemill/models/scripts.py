"""Script (a `main` function in one language) and ScriptRun (one execution of it): spec and status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, JsonValue, model_validator

from kubemill.models.common import (
    IMMUTABLE,
    Conditions,
    ConfigMapKeyRef,
    JsonObject,
    KubemillModel,
    KubemillResource,
    Name,
    PathList,
    StatusModel,
    WindmillPath,
    exactly_one,
    rule,
    validations,
)
from kubemill.models.openflow_parts import Retry, ScriptLanguage


def runtime_of(language: ScriptLanguage) -> ScriptLanguage:
    """The runner that executes `language` (`typescript` is run by Deno)."""
    return "deno" if language == "typescript" else language


class ContentSource(KubemillModel):
    """Code kept outside the Script, in a ConfigMap key."""

    config_map_key_ref: ConfigMapKeyRef


class EnvVar(KubemillModel):
    """An environment variable of the runner container (Kubernetes' EnvVar shape)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    value: str | None = None
    value_from: JsonObject | None = None


class RunnerSpec(KubemillModel):
    """How the runner pod is placed and sized; the image defaults to the language's runner image."""

    image: str | None = None
    resources: JsonObject | None = None
    node_selector: dict[str, str] | None = None
    tolerations: tuple[JsonObject, ...] | None = None
    service_account_name: Name | None = None
    pool: Name | None = None
    """A RunnerPool of the namespace whose warm workers run this Script's runs (docs/pools.md)."""


EXACTLY_ONE_CONTENT = (
    "set exactly one of spec.content (the code inline) or spec.contentFrom (a ConfigMap key)"
)


LOCKED = ("python3", "bun")
"""The languages whose runner installs a lock (as runners.lockfile.LOCKED_LANGUAGES, which models do not
import)."""
LOCK_LANGUAGES = "lock is for python3 or bun scripts (the pinned dependencies `kubemill lock` writes)"
LOCK_RULE = rule(
    "!has(self.lock) || self.language in ['python3', 'bun']",
    LOCK_LANGUAGES,
    message_expression=f"'{LOCK_LANGUAGES}, not ' + self.language",
    field_path=".lock",
)


def _locked_language(language: str, lock: str | None) -> None:
    if lock is not None and language not in LOCKED:
        raise ValueError(f"{LOCK_LANGUAGES}, not {language}")


class ScriptSpec(KubemillModel):
    """A script: Windmill path, language, code (inline or from a ConfigMap), and how it runs."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule("has(self.content) != has(self.contentFrom)", EXACTLY_ONE_CONTENT),
            LOCK_RULE,
        )
    )

    path: WindmillPath
    language: ScriptLanguage
    content: str | None = None
    content_from: ContentSource | None = None
    summary: str = ""
    description: str = ""
    schema_: JsonObject | None = Field(default=None, alias="schema")
    requirements: tuple[str, ...] = ()
    lock: str | None = None
    """The pinned dependencies (a Windmill `.script.lock`), installed exactly instead of `requirements`."""
    resources: PathList = ()
    timeout_seconds: Annotated[int, Field(ge=1)] | None = None
    retry: Retry | None = None
    concurrency_limit: Annotated[int, Field(ge=1)] | None = None
    env: Annotated[
        tuple[EnvVar, ...],
        Field(json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
    ] = ()
    runner: RunnerSpec | None = None

    @model_validator(mode="after")
    def _one_content(self) -> ScriptSpec:
        exactly_one({"content": self.content, "contentFrom": self.content_from}, EXACTLY_ONE_CONTENT)
        _locked_language(self.language, self.lock)
        return self


class ScriptStatus(StatusModel):
    """What the operator derived from the script: its input schema, a hash of its code, readiness."""

    observed_generation: int | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
    content_hash: str | None = None
    conditions: Conditions = ()


class Script(KubemillResource):
    """A Script resource."""

    kind: Literal["Script"]
    spec: ScriptSpec
    status: ScriptStatus | None = None


# --- runs ------------------------------------------------------------------------------------------------

RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"]


class InlineScript(KubemillModel):
    """A raw script carried by the run itself (no Script resource)."""

    model_config = ConfigDict(json_schema_extra=validations(LOCK_RULE))

    language: ScriptLanguage
    content: str
    requirements: tuple[str, ...] = ()
    lock: str | None = None
    resources: PathList = ()

    @model_validator(mode="after")
    def _lock_language(self) -> InlineScript:
        _locked_language(self.language, self.lock)
        return self


class RunError(KubemillModel):
    """Why a run failed, in Windmill's shape (`name`, `message`, `stack`)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    message: str = ""
    stack: str | None = None
    step: str | None = None
    result: JsonValue = None
    """An early stop's step result (`stop_after_if.error_include_result`), as Windmill includes it."""

    def as_result(self) -> dict[str, JsonValue]:
        """The error as a failed step's result: `{"error": {...}}`, as Windmill hands it on."""
        return {"error": self.model_dump(mode="json", exclude_none=True)}


class ResultRef(KubemillModel):
    """A result too large for the status: the ConfigMap (owned by the run) and key holding it, or, for a
    result over 1 MiB, the object (`s3`, its key) in the namespace's workspace storage and its size."""

    name: Name | None = None
    key: str = "result.json"
    s3: Annotated[str, Field(max_length=1024)] | None = None
    bytes: int | None = None


class ObjectRef(KubemillModel):
    """A namespaced object the run created or belongs to."""

    name: Name
    kind: str | None = None


EXACTLY_ONE_TARGET = "set exactly one of spec.scriptPath (a Script's path) or spec.script (inline code)"
SHARED_CLAIM_RULE = (
    "!has(self.sharedClaim) || (has(self.flowRun) && self.sharedClaim == self.flowRun + '-shared')"
)
SHARED_CLAIM = "spec.sharedClaim is only the claim of the step's own FlowRun (<spec.flowRun>-shared)"
ENTRYPOINT_RULE = "!has(self.entrypoint) || (has(self.flowRun) && has(self.stepId))"
ENTRYPOINT_STEP = (
    "spec.entrypoint is set only on a flow's preprocessor_module step (with spec.flowRun and spec.stepId)"
)


class ScriptRunSpec(KubemillModel):
    """Run a Script (by path) or an inline script with `args`."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule("has(self.scriptPath) != has(self.script)", EXACTLY_ONE_TARGET),
            rule(SHARED_CLAIM_RULE, SHARED_CLAIM),
            rule(ENTRYPOINT_RULE, ENTRYPOINT_STEP),
            IMMUTABLE,
        )
    )

    script_path: WindmillPath | None = None
    script: InlineScript | None = None
    args: JsonObject = Field(default_factory=dict)
    timeout_seconds: Annotated[int, Field(ge=1)] | None = None
    retry: Retry | None = None
    flow_run: Name | None = None
    step_id: str | None = None
    schedule_path: WindmillPath | None = None
    scheduled_for: datetime | None = None
    flow_user_states: JsonObject | None = None
    """A flow step: the FlowRun's user states when the step started (`wmill.get_flow_user_state`)."""
    shared_claim: Name | None = None
    """A step of a `same_worker` flow: the FlowRun's PersistentVolumeClaim, mounted at `./shared`."""
    entrypoint: Literal["preprocessor"] | None = None
    """A flow's `preprocessor_module` step (set by the FlowRun's engine): the script's `preprocessor` function
    runs instead of `main`, as Windmill's entrypoint override (engine/entrypoints.py)."""
    trigger_event: JsonObject | None = None
    """Set by a trigger (a webhook, an HttpTrigger): the event (`kind`, `body`, `query`, `headers`...). A
    Script that defines `preprocessor` runs `preprocessor(event)` and then `main` on its result, as in
    Windmill; a Script without one ignores it (`main` gets `args`)."""

    @model_validator(mode="after")
    def _one_target(self) -> ScriptRunSpec:
        exactly_one({"scriptPath": self.script_path, "script": self.script}, EXACTLY_ONE_TARGET)
        if self.entrypoint is not None and (self.flow_run is None or self.step_id is None):
            raise ValueError(ENTRYPOINT_STEP)
        if self.shared_claim is not None and self.shared_claim != f"{self.flow_run}-shared":
            raise ValueError(SHARED_CLAIM)  # a run mounts no other claim of the namespace
        return self


class ScriptRunStatus(StatusModel):
    """Where the run is (`phase`), what it returned (`result` or `resultRef`) or why it failed (`error`)."""

    observed_generation: int | None = None
    phase: RunPhase = "Pending"
    result: JsonValue = None
    result_ref: ResultRef | None = None
    error: RunError | None = None
    attempts: Annotated[int, Field(ge=0)] = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    job: ObjectRef | None = None
    pod: ObjectRef | None = None
    flow_user_states: JsonObject | None = None
    """A flow step's user states after it ran, when it set one (read by the FlowRun's engine)."""
    conditions: Conditions = ()


class ScriptRun(KubemillResource):
    """A ScriptRun resource."""

    kind: Literal["ScriptRun"]
    spec: ScriptRunSpec
    status: ScriptRunStatus | None = None
