"""`kubemill run` on flows: the engine drives local processes; paths resolve in a workspace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from kubemill.local.driver import FlowFailed
from kubemill.local.flows import flow_file, run_flow_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "windmill"
KUBEMILL = str(REPO / ".venv" / "bin" / "kubemill")


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    write(tmp_path, "wmill.yaml", "defaultTs: bun\n")
    write(tmp_path, "f/math/double.py", "def main(n: int):\n    return n * 2\n")
    write(
        tmp_path,
        "f/math/twice.flow/flow.yaml",
        """
summary: double twice
value:
  modules:
    - id: first
      value:
        {type: script, path: f/math/double, input_transforms: {n: {type: javascript, expr: flow_input.n}}}
    - id: second
      value:
        {type: script, path: f/math/double, input_transforms: {n: {type: javascript, expr: results.first}}}
schema: {type: object, properties: {n: {type: integer}}, required: [n]}
""",
    )
    write(
        tmp_path,
        "f/math/guarded.flow/flow.yaml",
        """
summary: a subflow, then an approval
value:
  modules:
    - id: call
      value: {type: flow, path: f/math/twice, input_transforms: {n: {type: static, value: 5}}}
    - id: sign_off
      value: {type: approval, approvers: [alice@example.com]}
    - id: last
      value: {type: identity}
""",
    )
    return tmp_path


def test_a_windmill_path_resolves_to_the_flow_folder(workspace: Path) -> None:
    assert flow_file("f/math/twice", workspace) == workspace / "f/math/twice.flow/flow.yaml"
    assert (
        flow_file(str(workspace / "f/math/twice.flow"), workspace)
        == workspace / "f/math/twice.flow/flow.yaml"
    )
    assert flow_file("f/math/double", workspace) is None


def test_script_steps_run_as_local_processes(workspace: Path) -> None:
    assert run_flow_file(workspace / "f/math/twice.flow/flow.yaml", {"n": 3}, workspace, ()) == 12


def test_the_input_is_checked_against_the_schema_first(workspace: Path) -> None:
    with pytest.raises(FlowFailed) as failed:
        run_flow_file(workspace / "f/math/twice.flow/flow.yaml", {"n": "three"}, workspace, ())
    assert failed.value.error is not None and failed.value.error.name == "InvalidInput"
    assert "invalid input at n" in failed.value.error.message


def test_an_approval_step_needs_approve_and_subflows_resolve_in_the_workspace(workspace: Path) -> None:
    file = workspace / "f/math/guarded.flow/flow.yaml"
    with pytest.raises(FlowFailed) as waiting:
        run_flow_file(file, {}, workspace, ())
    assert waiting.value.error is not None
    assert (
        "step sign_off waits for approval; run again with --approve sign_off" in waiting.value.error.message
    )
    assert run_flow_file(file, {}, workspace, ["sign_off"]) is None  # the approval's payload passes on


def test_the_cli_prints_the_result_and_exits_non_zero_with_one_line_on_failure(workspace: Path) -> None:
    ok = subprocess.run(
        [KUBEMILL, "run", "f/math/guarded", "-w", str(workspace), "--approve", "sign_off"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) is None
    assert "[kubemill] call: f/math/twice started" in ok.stderr
    failed = subprocess.run(
        [KUBEMILL, "run", "f/math/guarded", "-w", str(workspace)], capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        "kubemill run: flow suspended (step sign_off): NeedsApproval: "
        "step sign_off waits for approval; run again with --approve sign_off"
    )


def test_the_examples_inline_scripts_are_read_from_next_to_flow_yaml() -> None:
    result = run_flow_file(
        EXAMPLES / "f/demo/greet_and_count.flow/flow.yaml", {"names": "ann, bob, cy"}, EXAMPLES, ()
    )
    assert result == {"count": 3}


def test_kubemill_run_keeps_a_flow_cache_ttl_result_between_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEMILL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "ws" / "f" / "c" / "draw.flow"
    folder.mkdir(parents=True)
    draw = {
        "type": "rawscript",
        "language": "python3",
        "content": "import uuid\ndef main(n: int):\n    return f'{n}-{uuid.uuid4()}'\n",
        "input_transforms": {"n": {"type": "javascript", "expr": "flow_input.n"}},
    }
    document = {"summary": "draw", "value": {"cache_ttl": 600, "modules": [{"id": "draw", "value": draw}]}}
    (folder / "flow.yaml").write_text(json.dumps(document), encoding="utf-8")
    runs = [run_flow_file(folder / "flow.yaml", {"n": n}, tmp_path / "ws", ()) for n in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]
    assert len(list((tmp_path / "home" / "cache" / "results").glob("*.json"))) == 2


def test_kubemill_run_stops_a_backtracking_regex_in_a_flow_expression(workspace: Path) -> None:
    """`kubemill run` evaluates expressions in its own killable sandbox (the engine keeps none of its own):
    a regex that backtracks for ever fails its step with ExpressionTimeout instead of hanging the run."""
    write(
        workspace,
        "f/math/spin.flow/flow.yaml",
        """
summary: a regex that never ends
value:
  modules:
    - id: spin
      value:
        type: script
        path: f/math/double
        input_transforms:
          n: {type: javascript, expr: '/^(a+)+$/.test("a".repeat(40) + "b") ? 1 : 2'}
""",
    )
    done = subprocess.run(
        [KUBEMILL, "run", "f/math/spin", "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "ExpressionTimeout" in done.stderr and "spin" in done.stderr
