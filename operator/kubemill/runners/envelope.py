"""Reading back what a runner wrote: the result envelope `{"result", "error", "state"}`.

A runner writes the whole envelope to its result file, a summary of at most 4 KiB to the termination message
(the envelope itself when it fits, else `truncated: true` with the error cut short) and, when the envelope is
at most 1 MiB, the envelope as the last line of stdout after `KUBEMILL_RESULT:`. The operator reads the
termination message first and falls back to the log line when the summary is truncated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RESULT_PREFIX = "KUBEMILL_RESULT:"


@dataclass(frozen=True)
class EnvelopeError:
    """Windmill's error shape: the exception's class name, its message, and a stack trace if there is one."""

    name: str
    message: str
    stack: str | None = None


@dataclass(frozen=True)
class Envelope:
    """A plain dataclass, not a pydantic model: `kubemill run` reads one per run and should not pay for
    pydantic's import (parse_envelope checks the shape instead)."""

    result: Any = None
    error: EnvelopeError | None = None
    state: Any = None
    truncated: bool = False
    bytes: int | None = None
    flow_user_states: dict[str, Any] | None = None
    """A flow step's flow user states after it ran, when it set one (`wmill.set_flow_user_state`)."""
    result_ref: dict[str, Any] | None = None
    """`{"s3": key, "bytes": n}`: the runner put the result (over 1 MiB) in the workspace storage."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, name: str, message: str, stack: str | None = None, state: Any = None) -> Envelope:
        return cls(error=EnvelopeError(name=name, message=message, stack=stack), state=state)


def _error(value: Any) -> EnvelopeError | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("the runner's envelope is malformed: 'error' is neither null nor an object")
    name, message, stack = value.get("name"), value.get("message"), value.get("stack")
    if not isinstance(name, str) or not isinstance(message, str) or not isinstance(stack, str | None):
        raise ValueError("the runner's envelope is malformed: 'error' needs string 'name' and 'message'")
    return EnvelopeError(name=name, message=message, stack=stack)


def parse_envelope(text: str) -> Envelope:
    """The envelope in `text`; ValueError if it is not one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the runner's envelope is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not {"result", "error"} <= data.keys():
        raise ValueError("the runner's envelope lacks 'result' and 'error'")
    truncated, size = data.get("truncated", False), data.get("bytes")
    if not isinstance(truncated, bool) or not (size is None or (isinstance(size, int) and size >= 0)):
        raise ValueError("the runner's envelope is malformed: 'truncated' or 'bytes'")
    states = data.get("flow_user_states")
    if states is not None and not isinstance(states, dict):
        raise ValueError("the runner's envelope is malformed: 'flow_user_states' is not an object")
    ref = data.get("result_ref")
    if ref is not None and not (
        isinstance(ref, dict) and isinstance(ref.get("s3"), str) and isinstance(ref.get("bytes"), int)
    ):
        raise ValueError("the runner's envelope is malformed: 'result_ref' needs string 's3' and int 'bytes'")
    return Envelope(data["result"], _error(data["error"]), data.get("state"), truncated, size, states, ref)


def envelope_from_logs(logs: str) -> Envelope | None:
    """The envelope on the last `KUBEMILL_RESULT:` line of a container's log, if there is one."""
    for line in reversed(logs.rstrip("\n").split("\n")[-3:]):
        if line.startswith(RESULT_PREFIX):
            return parse_envelope(line[len(RESULT_PREFIX) :])
    return None


def envelope_from_termination_message(message: str | None) -> Envelope | None:
    """The summary a runner left in the termination message (check `.truncated`), or None if it left none."""
    if not message or not message.strip():
        return None
    try:
        return parse_envelope(message)
    except ValueError:
        return None
