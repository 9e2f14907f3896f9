"""Windmill's preprocessors: which function a run calls (`engine.entrypoints.plan_call`), how the flow engine
and the ScriptRun engine decide it, how a Flow asking for an impossible one is refused, and the runners'
entrypoint override (Python, Deno, Bun: the real wrappers through `run_script`). Abuse: nothing in a run's
args or event, nor the caller's environment, switches the entrypoint."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubemill.engine import Observations, advance
from kubemill.engine.actions import CreateRun
from kubemill.engine.entrypoints import Call, CallProblem, plan_call
from kubemill.engine.scriptrun import Inputs, StartAttempt, decide
from kubemill.engine.state import FlowRunStatus
from kubemill.engine.validation import admission_problems, validate_flow
from kubemill.k8s.builders import RunTarget
from kubemill.k8s.flowruns import child_run_manifest
from kubemill.local.scripts import run_script
from kubemill.models.flows import FlowRun
from kubemill.models.openflow import OpenFlow
from kubemill.models.scripts import ScriptRun
from kubemill.runners import Envelope, RunContext
from kubemill.ui.webhooks import has_preprocessor

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EVENT = {"kind": "webhook", "body": {"n": 4}, "raw_string": None, "query": {}, "headers": {}}
OVERRIDES = {"KUBEMILL_ENTRYPOINT": "main", "_ENTRYPOINT_OVERRIDE": "main"}

PYTHON = """
def preprocessor(event: dict, KUBEMILL_ENTRYPOINT: str = "", _ENTRYPOINT_OVERRIDE: str = ""):
    return {"x": event["body"]["n"] * 10, "seen": [KUBEMILL_ENTRYPOINT, _ENTRYPOINT_OVERRIDE]}

def main(x: int, seen: list = None):
    return {"main": x, "seen": seen}
"""
TYPESCRIPT = """
export async function preprocessor(event: any, KUBEMILL_ENTRYPOINT = "", _ENTRYPOINT_OVERRIDE = "") {
  return { x: event.body.n * 10, seen: [KUBEMILL_ENTRYPOINT, _ENTRYPOINT_OVERRIDE] };
}

export async function main(x: number, seen: unknown = null) {
  return { main: x, seen };
}
"""
CODE = {"python3": PYTHON, "deno": TYPESCRIPT, "bun": TYPESCRIPT}


# --- plan_call ----------------------------------------------------------------------------------------------


def test_a_run_calls_main_with_its_args_unless_a_trigger_started_a_script_with_a_preprocessor() -> None:
    args = {"x": 1, **OVERRIDES}
    assert plan_call("python3", PYTHON, args) == Call("main", args, validate=True)
    assert plan_call("python3", PYTHON, args, trigger_event=EVENT) == Call(
        "preprocessor-then-main", {"event": EVENT}, validate=False
    )
    assert plan_call("deno", TYPESCRIPT, args, trigger_event=EVENT).entrypoint == "preprocessor-then-main"  # type: ignore[union-attr]
    # a Script without a preprocessor ignores the event, as Windmill does; Go and Bash have none to read
    plain = plan_call("python3", "def main(x: int): ...", args, trigger_event=EVENT)
    assert plain == Call("main", args, True)
    bash = 'x="$1"\necho preprocessor\n'
    assert plan_call("bash", bash, args, trigger_event=EVENT) == Call("main", args, True)


def test_an_arg_or_event_named_like_the_override_switches_nothing() -> None:
    event = {**EVENT, "body": OVERRIDES, "query": OVERRIDES, **OVERRIDES}
    for args in ({"entrypoint": "preprocessor", "KUBEMILL_ENTRYPOINT": "preprocessor"}, {}):
        assert plan_call("python3", PYTHON, args).entrypoint == "main"  # type: ignore[union-attr]
        planned = plan_call("python3", PYTHON, args, trigger_event=event)
        assert planned == Call("preprocessor-then-main", {"event": event}, validate=False)


def test_a_flow_preprocessor_step_needs_a_python_or_typescript_preprocessor() -> None:
    event_args = {"event": EVENT}
    assert plan_call("bun", TYPESCRIPT, event_args, entrypoint="preprocessor", step="pre") == Call(
        "preprocessor", event_args, validate=False
    )
    only_pre = "def preprocessor(event):\n    return event\n"  # Windmill's step template has no main
    assert plan_call("python3", only_pre, event_args, entrypoint="preprocessor").entrypoint == "preprocessor"  # type: ignore[union-attr]
    go = plan_call("go", "package inner\nfunc main() {}\n", event_args, entrypoint="preprocessor", step="pre")
    assert isinstance(go, CallProblem) and go.name == "InvalidPreprocessor"
    assert "step pre (the flow's preprocessor_module): a go script cannot be a preprocessor" in go.message
    none = plan_call("python3", "def main(event): ...", event_args, entrypoint="preprocessor", step="pre")
    assert isinstance(none, CallProblem) and none.name == "PreprocessorNotFound"
    assert "step pre" in none.message and "defines no `preprocessor` function" in none.message
    broken = plan_call("python3", "def preprocessor(:\n", event_args, entrypoint="preprocessor")
    assert isinstance(broken, CallProblem) and broken.name == "SyntaxError"
    other = plan_call("python3", PYTHON, event_args, entrypoint="exec")
    assert isinstance(other, CallProblem) and other.name == "InvalidEntrypoint"


# --- the flow engine and the child run ---------------------------------------------------------------------


def preprocessed_flow(**transforms: Any) -> OpenFlow:
    return OpenFlow.model_validate(
        {
            "value": {
                "preprocessor_module": {
                    "id": "preprocessor",
                    "value": {
                        "type": "rawscript",
                        "language": "python3",
                        "content": PYTHON,
                        "input_transforms": transforms,
                    },
                },
                "modules": [{"id": "a", "value": {"type": "identity"}}],
            }
        }
    )


def test_the_preprocessor_step_gets_the_event_with_the_entrypoint_overridden_and_steps_do_not() -> None:
    flow = preprocessed_flow(extra={"type": "static", "value": 1})
    observations = Observations(run_name="fr", args=OVERRIDES, trigger_event=EVENT)
    decision = advance(flow, FlowRunStatus(), observations, NOW)
    (create,) = [a for a in decision.actions if isinstance(a, CreateRun)]
    assert (create.step, create.entrypoint) == ("preprocessor", "preprocessor")
    assert dict(create.args) == {"event": EVENT, "extra": 1}  # Windmill's flow args, transforms on top
    parent = FlowRun.model_validate(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "fr", "namespace": "ns", "uid": "u"},
            "spec": {"flowPath": "f/x/y", "args": OVERRIDES, "triggerEvent": EVENT},
        }
    )
    manifest = child_run_manifest(create, parent)
    assert manifest["spec"]["entrypoint"] == "preprocessor"
    ScriptRun.model_validate(manifest)  # the CRD's rule: only with flowRun and stepId
    # without a trigger, no preprocessor runs; a later step is a plain main call whatever the flow input holds
    plain = advance(flow, FlowRunStatus(), Observations(run_name="fr", args=OVERRIDES), NOW)
    assert not [a for a in plain.actions if isinstance(a, CreateRun) and a.entrypoint != "main"]


def test_a_scriptrun_cannot_ask_for_an_entrypoint_outside_a_flow() -> None:
    body = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "ScriptRun",
        "metadata": {"name": "r", "namespace": "ns"},
        "spec": {"scriptPath": "f/x/y", "entrypoint": "preprocessor"},
    }
    with pytest.raises(ValueError, match=r"spec\.entrypoint is set only on a flow's preprocessor_module"):
        ScriptRun.model_validate(body)


# --- the ScriptRun engine ---------------------------------------------------------------------------------

TARGET = RunTarget(
    path="f/hooks/pre",
    language="python3",
    code=PYTHON,
    schema={"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
)


def scriptrun(**spec: Any) -> ScriptRun:
    return ScriptRun.model_validate(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "ScriptRun",
            "metadata": {"name": "r1", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"scriptPath": "f/hooks/pre", **spec},
        }
    )


def test_a_triggered_run_of_a_script_with_a_preprocessor_is_not_checked_against_mains_schema() -> None:
    # the event's args are the preprocessor's: main's schema (x required) does not apply to them
    started = decide(scriptrun(args={"y": "body"}, triggerEvent=EVENT), Inputs(now=NOW, target=TARGET))
    assert started.actions == (StartAttempt(1),)
    refused = decide(scriptrun(args={"y": "body"}), Inputs(now=NOW, target=TARGET))
    assert refused.status.phase == "Failed" and refused.status.error is not None
    assert refused.status.error.name == "InvalidArgs"


def test_a_preprocessor_step_of_a_bash_script_fails_naming_preprocessor_module_and_the_language() -> None:
    bash = RunTarget(path="f/x/sh", language="bash", code='echo "{}"\n')
    run = scriptrun(args={"event": EVENT}, flowRun="fr", stepId="preprocessor", entrypoint="preprocessor")
    decision = decide(run, Inputs(now=NOW, target=bash))
    assert decision.status.phase == "Failed" and decision.status.error is not None
    assert decision.status.error.name == "InvalidPreprocessor"
    assert "preprocessor_module" in decision.status.error.message and "bash" in decision.status.error.message


# --- refusing a Flow ----------------------------------------------------------------------------------------


def flow_document(language: str, content: str, kind: str = "rawscript") -> dict[str, Any]:
    value: dict[str, Any] = {"type": kind, "input_transforms": {}}
    if kind == "rawscript":
        value |= {"language": language, "content": content}
    else:
        value |= {"path": "f/x/pre"}
    return {"value": {"preprocessor_module": {"id": "pre", "value": value}, "modules": []}}


@pytest.mark.parametrize("language", ["go", "bash"])
def test_a_go_or_bash_preprocessor_is_refused_naming_preprocessor_module_and_the_language(
    language: str,
) -> None:
    (problem,) = admission_problems(flow_document(language, "x"))
    assert problem.step_id == "pre"
    assert problem.message.startswith(f"preprocessor_module: a {language} script cannot be a preprocessor")


def test_a_script_step_preprocessor_is_checked_when_its_scripts_language_is_known() -> None:
    document = flow_document("", "", kind="script")
    assert admission_problems(document) == []  # a Script the operator's index does not know (yet)
    (refused,) = admission_problems(document, None, {"f/x/pre": "go"})
    assert refused.message.startswith("preprocessor_module: a go script cannot be a preprocessor")
    assert admission_problems(document, None, {"f/x/pre": "bun"}) == []
    problems = validate_flow(document, {"f/x/pre"}, script_languages={"f/x/pre": "bash"})
    assert [p.message.split(" (")[0] for p in problems] == [
        "preprocessor_module: a bash script cannot be a preprocessor"
    ]
    assert validate_flow(document, {"f/x/pre"}, script_languages={"f/x/pre": "python3"}) == []


def test_an_inline_preprocessor_without_a_preprocessor_function_is_refused_naming_the_step() -> None:
    (problem,) = admission_problems(flow_document("python3", "def main(event):\n    return event\n"))
    assert problem.step_id == "pre" and "defines no `preprocessor` function" in problem.message
    assert admission_problems(flow_document("deno", TYPESCRIPT)) == []
    assert admission_problems(flow_document("python3", PYTHON)) == []


# --- the runners' entrypoint override ---------------------------------------------------------------------


def run(language: str, code: str, args: dict[str, Any], tmp_path: Path, **kw: Any) -> Envelope:
    with (tmp_path / "log").open("ab") as log:
        return run_script(language, code, args, log=log, **kw)


@pytest.mark.parametrize("language", ["python3", "deno", "bun"])
def test_runners_call_main_preprocessor_or_both_as_the_operator_says(language: str, tmp_path: Path) -> None:
    code = CODE[language]
    args = {"x": 3, **OVERRIDES}
    assert run(language, code, args, tmp_path).result == {"main": 3, "seen": None}
    event_args = {"event": EVENT, **OVERRIDES}
    pre = run(language, code, event_args, tmp_path, entrypoint="preprocessor")
    assert pre.result == {"x": 40, "seen": ["main", "main"]}, (tmp_path / "log").read_text()[-2000:]
    both = run(language, code, {"event": EVENT}, tmp_path, entrypoint="preprocessor-then-main")
    assert both.result == {"main": 40, "seen": ["", ""]}


@pytest.mark.parametrize("language", ["python3", "deno", "bun"])
def test_the_callers_environment_does_not_switch_a_local_run(
    language: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEMILL_ENTRYPOINT", "preprocessor")
    assert run(language, CODE[language], {"x": 5}, tmp_path).result == {"main": 5, "seen": None}


@pytest.mark.parametrize("language", ["python3", "deno", "bun"])
def test_runner_errors_name_the_missing_function_and_the_step(language: str, tmp_path: Path) -> None:
    no_pre = CODE[language].replace("preprocessor", "prepare")
    context = RunContext(workspace="w", job_id="j", flow_step_id="pre")
    missing = run(language, no_pre, {"event": EVENT}, tmp_path, entrypoint="preprocessor", context=context)
    assert missing.error is not None and missing.error.name == "NameError"
    assert "no preprocessor function (step pre)" in missing.error.message
    lists = {
        "python3": "def preprocessor(event):\n    return [1]\n\ndef main(x): ...\n",
        "deno": "export function preprocessor(event) { return [1] }\nexport function main(x) {}\n",
    }
    not_object = lists.get(language, lists["deno"])
    wrong = run(language, not_object, {"event": EVENT}, tmp_path, entrypoint="preprocessor-then-main")
    assert wrong.error is not None and wrong.error.name == "TypeError", wrong
    assert wrong.error.message == "the preprocessor must return an object (main's args), not an array"
    unknown = run(language, CODE[language], {"x": 1}, tmp_path, entrypoint="exec")
    assert unknown.error is not None
    assert "unknown entrypoint 'exec'" in unknown.error.message.replace('"', "'")


# --- kubemill run and the webhook server -------------------------------------------------------------------

KUBEMILL = str(Path(__file__).resolve().parents[2] / ".venv/bin/kubemill")


def test_kubemill_run_trigger_event_runs_a_scripts_preprocessor_then_main(tmp_path: Path) -> None:
    (tmp_path / "wmill.yaml").write_text("{}\n")
    (tmp_path / "f" / "x").mkdir(parents=True)
    (tmp_path / "f/x/pre.py").write_text(PYTHON)
    (tmp_path / "f/x/plain.py").write_text("def main(x: int = 1):\n    return x\n")
    base = [KUBEMILL, "run", "-w", str(tmp_path)]
    event = json.dumps({**EVENT, **OVERRIDES})

    def kubemill_run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *extra], capture_output=True, text=True, timeout=120)

    triggered = kubemill_run("f/x/pre", "--trigger-event", event, "--input", '{"x": 1}')
    assert triggered.returncode == 0, triggered.stderr
    assert json.loads(triggered.stdout) == {"main": 40, "seen": ["", ""]}
    direct = kubemill_run("f/x/pre", "--input", json.dumps({"x": 7, **OVERRIDES}))
    assert json.loads(direct.stdout) == {"main": 7, "seen": None}, direct.stderr
    # a script without a preprocessor ignores the event and runs main on --input, as Windmill does
    plain = kubemill_run("f/x/plain", "--trigger-event", event, "--input", '{"x": 3}')
    assert (plain.returncode, json.loads(plain.stdout)) == (0, 3), plain.stderr


def test_the_webhook_server_sends_the_event_to_scripts_that_may_preprocess() -> None:
    def script(language: str, **spec: Any) -> dict[str, Any]:
        return {"spec": {"language": language, **spec}}

    assert has_preprocessor(script("python3", content=PYTHON), "p")
    assert has_preprocessor(script("bun", content=TYPESCRIPT), "p")
    assert not has_preprocessor(script("python3", content="def main(x): ..."), "p")
    assert not has_preprocessor(script("bash", content="echo preprocessor"), "p")
    kept = {"configMapKeyRef": {"name": "code", "key": "main.py"}}
    assert has_preprocessor(script("python3", contentFrom=kept), "p")  # the operator reads it and decides
    assert has_preprocessor({"spec": {"value": {"preprocessor_module": {"id": "p"}}}}, "f")
    assert not has_preprocessor({"spec": {"value": {"modules": []}}}, "f")
