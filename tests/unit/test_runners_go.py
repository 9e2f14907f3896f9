"""The Go runner: the brief's batch_processor.go (as a fixture and as the example manifest), typed args,
compile errors naming the line, panics and error types, the binary cache, and a non-root user with HOME=/tmp.

These spawn the Go toolchain (the runner tier); the standard library and the file-backed client are all a
script needs here, so nothing is fetched from the module proxy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubemill.local.scripts import run_script
from kubemill.runners import Envelope, RunContext, build_run_files, env_for, parse_envelope, write_run_files
from kubemill.runners.runtimes import local_command

REPO = Path(__file__).parents[2]
BATCH_SOURCES = {
    "fixture": (REPO / "tests/fixtures/brief/batch_processor.go").read_text(),
    "example": yaml.safe_load((REPO / "examples/manifests/scripts/batch-processor.yaml").read_text())["spec"][
        "content"
    ],
}
TYPED = """package inner

import (
	"fmt"
	"time"
)

type Config struct {
	Size  int      `json:"size"`
	Tags  []string `json:"tags,omitempty"`
	Inner struct {
		On bool `json:"on"`
	} `json:"inner"`
}

func main(
	name string, ratio float64, config Config, labels map[string]int, when time.Time, maybe *int,
) (interface{}, error) {
	return map[string]interface{}{
		"line": fmt.Sprintf("%s %.1f %d %v %v %d %s", name, ratio, config.Size, config.Tags,
			config.Inner.On, labels["a"], when.UTC().Format(time.RFC3339)),
		"maybe": maybe,
	}, nil
}
"""


def go_run(code: str, args: dict[str, Any], tmp_path: Path, **kw: Any) -> Envelope:
    with (tmp_path / "log").open("ab") as log:
        return run_script("go", code, args, log=log, timeout=300, **kw)


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "log").read_text(errors="replace")


def wrapper(code: str, args: dict[str, Any], run_dir: Path, **popen: Any) -> Envelope:
    """The wrapper alone, as a pod runs it (no validation before it)."""
    write_run_files(run_dir, build_run_files("go", code, args))
    env = dict(os.environ) | env_for("go", RunContext(workspace="w", job_id="j"), run_dir=str(run_dir))
    env |= popen.pop("env", {})
    done = subprocess.run(local_command("go"), env=env, capture_output=True, text=True, timeout=600, **popen)
    assert done.returncode in (0, 1), done.stderr
    return parse_envelope((run_dir / "out" / "result.json").read_text())


@pytest.mark.parametrize("source", sorted(BATCH_SOURCES))
def test_the_brief_batch_processor_runs_unchanged(source: str, tmp_path: Path) -> None:
    items = [{"id": 1}, {"id": "b"}, {"name": "no id"}]
    envelope = go_run(
        BATCH_SOURCES[source],
        {
            "items": items,
            "config": {"batch_size": 2, "concurrency": 2, "retry_attempts": 1, "timeout_secs": 5},
        },
        tmp_path,
        resources={"u/admin/processing_api": {"api_key": "$var:u/admin/key"}},
        variables={"u/admin/key": "k-1"},
    )
    assert envelope.ok, (envelope.error, log_of(tmp_path)[-2000:])
    assert {k: envelope.result[k] for k in ("total_items", "successful", "failed")} == {
        "total_items": 3,
        "successful": 2,
        "failed": 1,
    }
    assert envelope.result["errors"] == [{"item_id": "<nil>", "error": "missing required field: id"}]
    assert 'main.go:8: "encoding/json" imported and not used' in log_of(tmp_path)


def test_args_are_decoded_into_the_parameter_types(tmp_path: Path) -> None:
    args = {
        "name": "n",
        "ratio": 0.5,
        "config": {"size": 3, "tags": ["a"], "inner": {"on": True}},
        "labels": {"a": 7},
        "when": "2024-05-01T10:00:00+02:00",
        "maybe": 4,
    }
    envelope = go_run(TYPED, args, tmp_path)
    assert envelope.ok, (envelope.error, log_of(tmp_path)[-2000:])
    assert envelope.result == {"line": "n 0.5 3 [a] true 7 2024-05-01T08:00:00Z", "maybe": 4}


def test_an_arg_that_does_not_fit_its_type_names_the_argument(tmp_path: Path) -> None:
    envelope = wrapper(TYPED, {"name": "n", "ratio": "half"}, tmp_path / "run")
    assert envelope.error is not None
    assert envelope.error.name == "InvalidArgs"
    assert envelope.error.message.startswith("argument ratio: json: cannot unmarshal string")


def test_compile_errors_name_the_line(tmp_path: Path) -> None:
    code = "package inner\n\nfunc main(x int) (int, error) {\n\treturn y, nil\n}\n"
    envelope = wrapper(code, {"x": 1}, tmp_path / "run")
    assert envelope.error is not None
    assert (envelope.error.name, envelope.error.message) == ("CompileError", "undefined: y (line 4)")
    envelope = wrapper("package main\n\nfunc main() {}\n", {}, tmp_path / "run2")
    assert envelope.error is not None
    assert "`package inner`" in envelope.error.message


def test_panics_and_error_types(tmp_path: Path) -> None:
    code = """package inner

type QuotaError struct{ Left int }

func (e *QuotaError) Error() string { return "quota exhausted" }

func Main(mode string) (interface{}, error) {
	if mode == "panic" {
		var m map[string]int
		m["x"] = 1
	}
	return nil, &QuotaError{}
}
"""
    panicked = go_run(code, {"mode": "panic"}, tmp_path)
    assert panicked.error is not None
    assert (panicked.error.name, panicked.error.message) == ("Panic", "assignment to entry in nil map")
    assert "main.go:10" in (panicked.error.stack or "")
    failed = go_run(code, {"mode": "error"}, tmp_path)
    assert failed.error is not None
    assert (failed.error.name, failed.error.message) == ("QuotaError", "quota exhausted")


def test_a_cached_binary_runs_without_the_toolchain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMILL_HOME", str(tmp_path / "home"))
    code = "package inner\n\nfunc main(x int) (interface{}, error) { return x * 2, nil }\n"
    assert go_run(code, {"x": 2}, tmp_path).result == 4
    [binary] = (tmp_path / "home" / "deps" / "go" / "bin").iterdir()
    monkeypatch.setenv("KUBEMILL_GO", "/bin/false")
    assert go_run(code, {"x": 5}, tmp_path).result == 10
    assert go_run(code + "\n", {"x": 5}, tmp_path).error is not None, "a changed script is built again"
    assert binary.exists()


def test_a_module_that_cannot_be_resolved_is_a_dependency_error(tmp_path: Path) -> None:
    code = (
        'package inner\n\nimport "example.invalid/nothing"\n\n'
        "func main() (interface{}, error) {\n\treturn nothing.X, nil\n}\n"
    )
    envelope = wrapper(code, {}, tmp_path / "run", env={"GOPROXY": "off"})
    assert envelope.error is not None
    assert envelope.error.name == "DependencyError"
    assert "example.invalid/nothing" in envelope.error.message


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user can use (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="kubemill-go-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as uid 65532")
def test_a_non_root_user_with_home_in_tmp_builds_and_runs(shared_tmp: Path) -> None:
    run_dir = shared_tmp / "run"
    code = (
        'package inner\n\nimport "os"\n\n'
        "func main(x int) (interface{}, error) { return []interface{}{x, os.Getuid()}, nil }\n"
    )
    write_run_files(run_dir, build_run_files("go", code, {"x": 3}))
    for path in [run_dir, *run_dir.rglob("*")]:
        path.chmod(0o777)
    home = shared_tmp / "home"
    home.mkdir()
    home.chmod(0o777)
    env = {"PATH": os.environ["PATH"], "HOME": str(home)} | env_for(
        "go", RunContext(workspace="w", job_id="j"), run_dir=str(run_dir)
    )
    done = subprocess.run(
        local_command("go"),
        env=env,
        user=65532,
        group=65532,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=shared_tmp,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "out" / "result.json").read_text())["result"] == [3, 65532]
    assert (home / ".cache" / "kubemill" / "deps" / "go" / "bin").is_dir()
    assert (home / ".cache" / "go-build").is_dir()
