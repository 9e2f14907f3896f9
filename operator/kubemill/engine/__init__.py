"""The pure OpenFlow engine: `advance()` turns (flow, status, observations, now) into a `Decision`.

No Kubernetes, no clock, no I/O (the JavaScript evaluator, passed in, is the one bounded impure edge). The
operator parses a FlowRun into these models, calls `advance`, carries out the actions and writes the status.
"""

from kubemill.engine.actions import (
    Action,
    ApprovalEvent,
    AwaitApproval,
    ChildObservation,
    CreateRun,
    Decision,
    DeleteRun,
    EarlyReturn,
    Finish,
    Observations,
    RawScriptSource,
    RequeueAfter,
)
from kubemill.engine.advance import advance
from kubemill.engine.expressions import Evaluator, ExpressionError, ExpressionTimeout, QuickJSEvaluator
from kubemill.engine.naming import child_run_name
from kubemill.engine.sandbox import IsolatedEvaluator
from kubemill.engine.state import ApprovalRecord, FlowRunStatus, PendingApproval, RunError, StepRecord
from kubemill.engine.validation import Problem, input_problem, validate_flow

__all__ = [
    "Action",
    "ApprovalEvent",
    "ApprovalRecord",
    "AwaitApproval",
    "ChildObservation",
    "CreateRun",
    "Decision",
    "DeleteRun",
    "EarlyReturn",
    "Evaluator",
    "ExpressionError",
    "ExpressionTimeout",
    "Finish",
    "FlowRunStatus",
    "IsolatedEvaluator",
    "Observations",
    "PendingApproval",
    "Problem",
    "QuickJSEvaluator",
    "RawScriptSource",
    "RequeueAfter",
    "RunError",
    "StepRecord",
    "advance",
    "child_run_name",
    "input_problem",
    "validate_flow",
]
