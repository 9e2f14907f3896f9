"""How the engine keeps a FlowRun's status compact: small results inline, large ones as references.

The status itself is one model, `kubemill.models.flows.FlowRunStatus` (camelCase on the wire, the CRD is
generated from it); it is re-exported here for the engine's modules. `advance()` is a function of that status
(plus the flow, observations and the clock), so everything the engine must remember between two reconciles
lives there. It stays small on purpose: a step record names its child run instead of copying the child's
status; a step's result is kept inline only while it is small (`INLINE_RESULT_LIMIT` bytes of JSON) and
otherwise as `{"$ref": <child run name>}`, resolved from the child run when needed; the records of a finished
loop iteration are dropped and only its (compact) result is kept on the loop's record. So a 1,000-iteration
loop costs about one short JSON value per iteration.

Record keys are step paths: a top-level step's id (`validate_order`), or, inside loop iteration `i`,
`<loop path>/<i>/<id>` (`each_item/3/charge`). Step ids are unique in a flow, so branches need no segment.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, JsonValue

from kubemill.models.flows import (
    DONE_STEP_PHASES,
    TERMINAL_PHASES,
    ApprovalRecord,
    FlowRunStatus,
    PendingApproval,
    StepPhase,
    StepRecord,
)
from kubemill.models.flows import FlowRunPhase as RunPhase
from kubemill.models.scripts import RunError

__all__ = [
    "DONE_STEP_PHASES",
    "INLINE_RESULT_LIMIT",
    "REF_KEY",
    "TERMINAL_PHASES",
    "ApprovalRecord",
    "FlowRunStatus",
    "Frozen",
    "PendingApproval",
    "RunError",
    "RunPhase",
    "StepPhase",
    "StepRecord",
    "referenced_run",
    "store_result",
]

INLINE_RESULT_LIMIT = 256
"""Results whose JSON is longer than this many bytes are stored as a reference to the child run."""

REF_KEY = "$ref"


class Frozen(BaseModel):
    """Base of the engine's own data (actions, observations): immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def store_result(value: JsonValue, run: str | None) -> JsonValue:
    """The compact form of a child's result: inline when small (or when there is no run to point at)."""
    if run is None:
        return value
    text = json.dumps(value, separators=(",", ":"))
    is_ref_like = isinstance(value, dict) and REF_KEY in value
    if len(text) > INLINE_RESULT_LIMIT or is_ref_like:
        return {REF_KEY: run}
    return value


def referenced_run(stored: JsonValue) -> str | None:
    """The child run a stored result points at, or None when it is inline."""
    if isinstance(stored, dict) and len(stored) == 1 and isinstance(stored.get(REF_KEY), str):
        ref = stored[REF_KEY]
        assert isinstance(ref, str)
        return ref
    return None
