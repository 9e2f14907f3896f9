"""Deterministic child run names: the same (flow run, step path, attempt) always gives the same name.

That is what makes creates idempotent: a restarted operator that creates a child again gets 409 and adopts the
existing one instead of running the step twice. Names are DNS-1123 labels (lowercase alphanumerics and '-',
at most 63 characters) so they are valid object names and label values: a readable prefix (run name and step
id) and a hash of the full identity, in the manner of Tekton's `kmeta.ChildName`.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
_HASH_CHARS = 10
_INVALID = re.compile(r"[^a-z0-9-]+")


def _slug(text: str) -> str:
    return _INVALID.sub("-", text.lower()).strip("-")


def identity_digest(*parts: str) -> str:
    """A stable hex digest of the parts (also the seed of retry jitter)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def child_run_name(run_name: str, step_path: str, attempt: int) -> str:
    """`<run>-<step>-<hash>`, truncated so the whole is at most 63 characters."""
    digest = identity_digest(run_name, step_path, str(attempt))[:_HASH_CHARS]
    step = _slug(step_path.rsplit("/", 1)[-1])
    if "/" in step_path:
        step = f"{step}-{_slug(step_path.split('/')[-2])}"  # the iteration index keeps names readable
    prefix = f"{_slug(run_name)}-{step}".strip("-")[: MAX_NAME - _HASH_CHARS - 1].rstrip("-")
    return f"{prefix}-{digest}" if prefix else f"r-{digest}"


def child_name(parent: str, suffix: str, *identity: str) -> str:
    """`<parent>-<suffix>-<hash>`, a DNS-1123 label of at most 63 characters, stable for the same inputs (the
    objects a ScriptRun owns: its attempts' Jobs, its result ConfigMap, its Secret)."""
    tail = f"-{suffix}-{identity_digest(parent, suffix, *identity)[:8]}"
    prefix = _INVALID.sub("-", parent.lower()).strip("-")[: MAX_NAME - len(tail)].rstrip("-")
    return f"{prefix or 'run'}{tail}"


def job_name(run_name: str, attempt: int) -> str:
    """The Job of attempt `attempt` (1-based) of a run."""
    return child_name(run_name, f"a{attempt}")


def result_configmap_name(run_name: str) -> str:
    """The ConfigMap holding a result too large for the status."""
    return child_name(run_name, "result")
