"""The names kubemill writes on the cluster, in one place: its API group and version, the label and annotation
keys on its objects and their children, the finalizer, and the phases a run ends in.

Modules keep their own short names for these (`builders.LABEL_RUN_UID`, `approvals.APPROVE`), bound here; a
new key is added here first. Labels are what selectors select on; annotations carry everything else.
"""

from __future__ import annotations

GROUP = "kubemill.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})
"""The phases a ScriptRun or FlowRun never leaves."""

FINALIZER = "kubemill.dev/finalizer"

# --- labels

LABEL_ATTEMPT = "kubemill.dev/attempt"
LABEL_CACHE = "kubemill.dev/cache"
LABEL_CODE = "kubemill.dev/code"
LABEL_FLOW_RUN_UID = "kubemill.dev/flow-run-uid"
LABEL_LOG_OF = "kubemill.dev/log-of"
LABEL_PARENT_RUN_UID = "kubemill.dev/parent-run-uid"
LABEL_RUN_UID = "kubemill.dev/run-uid"
LABEL_SCHEDULE = "kubemill.dev/schedule"
LABEL_SCHEDULE_HOOK = "kubemill.dev/schedule-hook"
LABEL_SHARED_CLAIM = "kubemill.dev/shared-claim"
LABEL_WORKSPACE_STORAGE = "kubemill.dev/workspace-storage"

# --- annotations

ANNOTATION_APPROVE = "kubemill.dev/approve"
ANNOTATION_CANCEL = "kubemill.dev/cancel"
ANNOTATION_COMMENT = "kubemill.dev/comment"
ANNOTATION_EXPIRES_AT = "kubemill.dev/expires-at"
ANNOTATION_HISTORY_LIMIT = "kubemill.dev/history-limit"
ANNOTATION_LOG_BYTES = "kubemill.dev/log-bytes"
ANNOTATION_LOG_CUT_BYTES = "kubemill.dev/log-cut-bytes"
ANNOTATION_LOG_FINAL = "kubemill.dev/log-final"
ANNOTATION_MAX_FINISHED_RUNS = "kubemill.dev/max-finished-runs"
ANNOTATION_PATH = "kubemill.dev/path"
ANNOTATION_PAYLOAD = "kubemill.dev/payload"
ANNOTATION_REJECT = "kubemill.dev/reject"
ANNOTATION_REQUESTED_BY = "kubemill.dev/requested-by"
ANNOTATION_RETRY_FROM = "kubemill.dev/retry-from"
ANNOTATION_RETRY_OF = "kubemill.dev/retry-of"
ANNOTATION_SCRIPT_PATH = "kubemill.dev/script-path"
ANNOTATION_SCRIPT_RUN = "kubemill.dev/script-run"
ANNOTATION_SOURCE = "kubemill.dev/source"
ANNOTATION_SPEC_HASH = "kubemill.dev/spec-hash"
ANNOTATION_STEP = "kubemill.dev/step"
ANNOTATION_TTL_SECONDS_AFTER_FAILURE = "kubemill.dev/ttl-seconds-after-failure"
ANNOTATION_TTL_SECONDS_AFTER_SUCCESS = "kubemill.dev/ttl-seconds-after-success"
