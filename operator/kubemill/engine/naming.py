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
