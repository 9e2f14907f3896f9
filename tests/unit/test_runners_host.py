"""The runners' host side: commands, environment, run files and envelope parsing (pure, no processes)."""

from __future__ import annotations

import json

import pytest
from kubemill.runners import (
    RESULT_PREFIX,
    RunContext,
    build_run_files,
    canonical_language,
    code_filename,
    command_for,
    env_for,
    envelope_from_logs,
    envelope_from_termination_message,
    parse_envelope,
    resource_filename,
)
from kubemill.runners.rundir import ResourcePathError


@pytest.mark.parametrize(
    ("language", "command"),
    [
        ("python3", ["python3", "/opt/kubemill/runner/run.py"]),
        ("bash", ["bash", "/opt/kubemill/runner/run.sh"]),
    ],
)
def test_command_is_interpreter_then_wrapper(language: str, command: list[str]) -> None:
    assert command_for(language) == command


def test_every_language_runs_a_wrapper_under_the_runner_dir() -> None:
    for language in ("python3", "deno", "bun", "go", "bash"):
        command = command_for(language)
        assert command[0] == {"python3": "python3", "go": "bash"}.get(language, language)
        assert command[-1].startswith("/opt/kubemill/runner/run.")


def test_typescript_means_deno_and_unknown_languages_are_named() -> None:
    assert canonical_language("typescript") == "deno"
    assert code_filename("typescript") == "main.ts"
    with pytest.raises(ValueError, match="unsupported language 'cobol'"):
        command_for("cobol")


def test_env_carries_windmill_variables_and_defaults_state_path_to_job_path() -> None:
    context = RunContext(workspace="team-a", job_id="run-1", job_path="f/x/y", flow_step_id="a")
    env = env_for("python3", context)
    assert env["WM_WORKSPACE"] == "team-a"
    assert env["WM_JOB_ID"] == "run-1"
    assert env["WM_STATE_PATH"] == "f/x/y"
    assert env["WM_FLOW_STEP_ID"] == "a"
    # a pod uses the default paths; the entrypoint is always the operator's (main unless it decides else)
    assert {k for k in env if k.startswith("KUBEMILL_")} == {"KUBEMILL_ENTRYPOINT"}
    assert env["KUBEMILL_ENTRYPOINT"] == "main"


def test_env_for_a_local_run_points_at_its_directory() -> None:
    env = env_for("bash", RunContext(workspace="w", job_id="j"), run_dir="/tmp/r", requirements=("a==1", "b"))
    assert env["KUBEMILL_CODE_DIR"] == "/tmp/r/code"
    assert env["KUBEMILL_ARGS_FILE"] == "/tmp/r/args.json"
    assert env["KUBEMILL_RESULT_FILE"] == "/tmp/r/out/result.json"
    assert env["KUBEMILL_REQUIREMENTS"] == "a==1\nb"


def test_resource_filenames_encode_the_windmill_path() -> None:
    assert resource_filename("resource", "u/admin/api_credentials") == "resource.u.admin.api_credentials"
    assert resource_filename("variable", "f/ops/slack-token") == "variable.f.ops.slack-token"
    with pytest.raises(ResourcePathError, match=r"u/admin/a\.b"):
        resource_filename("resource", "u/admin/a.b")


def test_run_files_hold_code_args_and_resources() -> None:
    files = build_run_files(
        "python3", "def main(): pass\n", {"a": 1}, {"u/admin/db": {"host": "h"}}, {"u/admin/key": "k"}
    ).files
    assert files["code/main.py"] == b"def main(): pass\n"
    assert json.loads(files["args.json"]) == {"a": 1}
    assert json.loads(files["resources/resource.u.admin.db"]) == {"host": "h"}
    assert files["resources/variable.u.admin.key"] == b"k"


def test_envelope_from_the_last_log_line() -> None:
    logs = f"hello\n\n{RESULT_PREFIX}" + json.dumps({"result": [1], "error": None, "state": 2}) + "\n"
    envelope = envelope_from_logs(logs)
    assert envelope is not None
    assert envelope.ok
    assert (envelope.result, envelope.state) == ([1], 2)
    assert envelope_from_logs("no envelope here\n") is None


def test_truncated_termination_message_says_so() -> None:
    summary = json.dumps(
        {
            "result": None,
            "state": None,
            "truncated": True,
            "bytes": 9000,
            "error": {"name": "E", "message": "m"},
        }
    )
    envelope = envelope_from_termination_message(summary)
    assert envelope is not None
    assert envelope.truncated
    assert envelope.error is not None
    assert envelope.error.name == "E"
    assert envelope_from_termination_message("") is None
    assert envelope_from_termination_message("killed") is None


def test_malformed_envelopes_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_envelope("{")
    with pytest.raises(ValueError, match="lacks"):
        parse_envelope('{"x": 1}')
