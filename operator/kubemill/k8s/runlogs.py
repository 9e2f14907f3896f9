"""A run's combined output, kept after its pod is gone: masked, bounded, gzip-compressed in a ConfigMap the
run owns (so it is deleted with the run, and with a FlowRun's children when the FlowRun goes).

Pure functions (the operator's run executor reads the pod log and writes what these return):

    text = run_log_text(attempt, pod_log, masks)      # one attempt's output, masked, no envelope line
    combined, cut = bound(previous + text, LOG_MAX)   # the tail kept, the cut said in its first line
    cm = build_log_configmap(run, combined, cut, final)
    log = read_log_configmap(cm)                      # the text back (kubemill logs, the UI)

Why a ConfigMap and not object storage: docs/decisions.md ("Run logs").
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubemill import constants
from kubemill.k8s.builders import LABEL_RUN_UID, MANAGED_BY, RunIdentity, child_name, owner_reference
from kubemill.runners.envelope import RESULT_PREFIX
from kubemill.secrets import mask_text

LOG_KEY = "log.gz"
LOG_MAX = 256 * 1024
"""Bytes of (uncompressed) output kept per run: the tail, with a line saying how much was cut before it."""
POD_LOG_LINES = 50_000
"""Lines asked of the API server per attempt (the byte bound is applied after masking)."""
LABEL_LOG_OF = constants.LABEL_LOG_OF
ANNOTATION_BYTES = constants.ANNOTATION_LOG_BYTES
ANNOTATION_CUT = constants.ANNOTATION_LOG_CUT_BYTES
ANNOTATION_FINAL = constants.ANNOTATION_LOG_FINAL
CUT_PREFIX = "[kubemill: "


def log_configmap_name(run_name: str) -> str:
    """The ConfigMap holding a run's stored log (owned by the run)."""
    return child_name(run_name, "log")


def attempt_header(attempt: int) -> str:
    return f"--- attempt {attempt} ---\n"


def run_log_text(attempt: int, pod_log: str, masks: Iterable[str]) -> str:
    """One attempt's output as stored: a header line, the log without the runner's result envelope line
    (the result is kept in the status), every secret value masked (`kubemill.secrets.mask_text`)."""
    lines: list[str] = []
    for line in pod_log.splitlines(keepends=True):
        if line.startswith(RESULT_PREFIX):
            if lines and lines[-1] == "\n":  # the runner starts its envelope on a line of its own
                lines.pop()
            continue
        lines.append(line)
    body = "".join(lines)
    if body and not body.endswith("\n"):
        body += "\n"
    return attempt_header(attempt) + mask_text(body, masks)


def bound(text: str, limit: int = LOG_MAX, already_cut: int = 0) -> tuple[str, int]:
    """The last `limit` bytes of `text` (cut at a line start when one is near), and the bytes cut in all
    (`already_cut` from earlier bounds plus this one's). The kept text starts with a line saying the cut."""
    data = text.encode()
    if len(data) <= limit:
        return text, already_cut
    tail = data[-limit:]
    newline = tail.find(b"\n")
    if 0 <= newline < 4096:
        tail = tail[newline + 1 :]
    cut = already_cut + len(data) - len(tail)
    return tail.decode("utf-8", errors="ignore"), cut


def cut_notice(cut: int) -> str:
    return f"{CUT_PREFIX}{cut} earlier bytes of output were cut; the last {LOG_MAX} bytes are kept]\n"


def strip_notice(text: str) -> str:
    """The stored text without its cut line (to append to it and bound again)."""
    if text.startswith(CUT_PREFIX):
        return text.split("\n", 1)[1] if "\n" in text else ""
    return text


@dataclass(frozen=True)
class StoredLog:
    text: str
    """The output, with the cut line first when some was cut."""
    cut_bytes: int = 0
    final: bool = False
    """The run has finished: nothing more will be added."""


def build_log_configmap(run: RunIdentity, text: str, cut: int, final: bool) -> dict[str, Any]:
    """The ConfigMap keeping `text` (already masked and bounded) gzip-compressed, owned by the run."""
    stored = (cut_notice(cut) if cut else "") + text
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": log_configmap_name(run.name),
            "namespace": run.namespace,
            "labels": {**MANAGED_BY, LABEL_RUN_UID: run.uid, LABEL_LOG_OF: run.name},
            "annotations": {
                ANNOTATION_BYTES: str(len(stored.encode())),
                ANNOTATION_CUT: str(cut),
                ANNOTATION_FINAL: "true" if final else "false",
            },
            "ownerReferences": [owner_reference(run)],
        },
        "binaryData": {LOG_KEY: base64.b64encode(gzip.compress(stored.encode(), mtime=0)).decode()},
    }


def read_log_configmap(cm: Mapping[str, Any]) -> StoredLog:
    """The stored log of a ConfigMap built by `build_log_configmap`."""
    encoded = (cm.get("binaryData") or {}).get(LOG_KEY)
    if not encoded:
        return StoredLog("")
    text = gzip.decompress(base64.b64decode(encoded)).decode("utf-8", errors="replace")
    annotations = (cm.get("metadata") or {}).get("annotations") or {}
    cut = int(annotations.get(ANNOTATION_CUT, "0") or 0)
    return StoredLog(text, cut, annotations.get(ANNOTATION_FINAL) == "true")
