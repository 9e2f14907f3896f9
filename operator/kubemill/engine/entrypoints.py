"""Which function of a script a run calls, and with what: Windmill's preprocessors, decided in one place.

Windmill calls a script's `main`, except in two cases where it calls the script's `preprocessor`:

- a flow's `preprocessor_module` step, for a run started by a trigger: Windmill runs the step's script with
  the entrypoint overridden to `preprocessor`, on the flow's args (`{"event": ...}`); its result is the flow
  input (engine/advance.py). kubemill's engine marks that child run (`CreateRun.entrypoint`, the child
  ScriptRun's `spec.entrypoint`);
- a Script that defines `preprocessor`, started by a trigger (a webhook, an HTTP route): Windmill runs
  `preprocessor(event)`, then `main(**result)`. The trigger writes the event into the ScriptRun's
  `spec.triggerEvent`; a Script without a preprocessor ignores it and `main` gets `spec.args`.

Preprocessors exist in Python and TypeScript only (Windmill's docs); a flow step that asks a Go or Bash script
for one is refused, a Go or Bash Script started by a trigger runs `main` (Windmill reads no preprocessor
there). The runner learns the entrypoint from `KUBEMILL_ENTRYPOINT`, which only the operator (or `kubemill
run`) sets from this decision: nothing in a run's args or event can choose it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubemill.signatures import PREPROCESSOR_LANGUAGES, SignatureError, derive_schema, preprocessor_schema

Entrypoint = Literal["main", "preprocessor", "preprocessor-then-main"]
"""`main`; `preprocessor` (a flow's preprocessor step: its result is the step's); `preprocessor-then-main`
(a Script started by a trigger: the preprocessor's result, an object, is main's args)."""


@dataclass(frozen=True)
class Call:
    """What the runner calls and with which args; `validate` says whether `args` are main's (checked against
    the Script's schema, as any run's), not a preprocessor's (Windmill does not check an event)."""

    entrypoint: Entrypoint
    args: Mapping[str, Any]
    validate: bool


@dataclass(frozen=True)
class CallProblem:
    """Why the run cannot start (a permanent failure of the run)."""

    name: str
    message: str


def plan_call(
    language: str,
    code: str,
    args: Mapping[str, Any],
    *,
    entrypoint: str | None = None,
    trigger_event: Mapping[str, Any] | None = None,
    step: str | None = None,
) -> Call | CallProblem:
    """The call a run makes: `entrypoint` is a flow step's (`spec.entrypoint`), `trigger_event` the event of
    a run a trigger started (`spec.triggerEvent`), `step` the flow step's id for messages."""
    if entrypoint == "preprocessor":
        where = f"step {step} (the flow's preprocessor_module)" if step else "the flow's preprocessor_module"
        if language not in PREPROCESSOR_LANGUAGES:
            return CallProblem(
                "InvalidPreprocessor",
                f"{where}: a {language} script cannot be a preprocessor (Windmill's preprocessors are Python "
                "or TypeScript)",
            )
        try:
            derive_schema(language, code, "preprocessor")
        except SignatureError as exc:
            if not str(exc).startswith("no `"):
                return CallProblem("SyntaxError", f"{where}: the script does not parse: {exc}")
            return CallProblem(
                "PreprocessorNotFound",
                f"{where}: the script defines no `preprocessor` function (Windmill runs a flow's "
                "preprocessor step through its `preprocessor(event)`, not `main`)",
            )
        return Call("preprocessor", dict(args), validate=False)
    if entrypoint not in (None, "main"):
        return CallProblem("InvalidEntrypoint", f"unknown entrypoint {entrypoint!r} (only preprocessor)")
    if trigger_event is not None and preprocessor_schema(language, code) is not None:
        return Call("preprocessor-then-main", {"event": dict(trigger_event)}, validate=False)
    return Call("main", args, validate=True)
