"""The runner contract, per language: envelope, exit code, log line, termination summary, state, limits.

These tests spawn the local interpreters (the runner tier): each wrapper in runner_images/<language>/ runs
exactly as a pod would run it, with its paths pointed at a temporary run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubemill.local.scripts import InvalidRun, run_script
from kubemill.runners import (
    RESULT_PREFIX,
    Envelope,
    RunContext,
    build_run_files,
    env_for,
    envelope_from_logs,
    envelope_from_termination_message,
    parse_envelope,
    write_run_files,
)
from kubemill.runners.runtimes import local_command

LANGUAGES = ["python3", "bash", "deno", "bun", "go"]

SCRIPTS: dict[str, dict[str, str]] = {
    "python3": {
        "echo": 'def main(name: str):\n    print("greeting", name)\n    return {"hello": name}\n',
        "raise": 'def main():\n    raise ValueError("boom")\n',
        "big": 'def main(n: int):\n    return "x" * n\n',
        "state": "import wmill\n\ndef main():\n    n = (wmill.get_state() or 0) + 1\n    wmill.set_state(n)\n"
        "    return n\n",
        "logs": 'import sys\n\ndef main(mb: int):\n    line = "y" * 1023 + "\\n"\n'
        "    for _ in range(mb * 1024):\n        sys.stdout.write(line)\n    return 'done'\n",
        "tree": "import subprocess, time\n\ndef main(pidfile: str):\n"
        '    p = subprocess.Popen(["sleep", "300"])\n'
        "    with open(pidfile, 'w') as f:\n        f.write(str(p.pid))\n    time.sleep(300)\n",
        "syntax": "def main(x: int):\n    return (x\n",
    },
    "bash": {
        "echo": 'name="$1"\necho "greeting $name" >&2\necho "{\\"hello\\": \\"$name\\"}"\n',
        "raise": "echo boom >&2\nexit 3\n",
        "big": 'n="$1"\nhead -c "$n" /dev/zero | tr \'\\0\' x\necho\n',
        "state": 'n=$(wmill_get_state)\n[ "$n" = null ] && n=0\n'
        "wmill_set_state $((n + 1))\necho $((n + 1))\n",
        "logs": 'mb="$1"\nyes yyyyyyyyyyyyyyy | head -c $((mb * 1048576))\necho done\n',
        "tree": 'pidfile="$1"\nsleep 300 &\necho $! > "$pidfile"\nwait\n',
        "syntax": 'x="$1"\nif then fi (\n',
    },
    "deno": {
        "echo": 'export function main(name: string) {\n  console.log("greeting", name);\n'
        "  return { hello: name };\n}\n",
        "raise": 'export function main() {\n  throw new Error("boom");\n}\n',
        "big": 'export function main(n: number) {\n  return "x".repeat(n);\n}\n',
        "state": 'import * as wmill from "npm:windmill-client@1";\n\nexport async function main() {\n'
        "  const n = ((await wmill.getState()) ?? 0) + 1;\n  await wmill.setState(n);\n  return n;\n}\n",
        "logs": "export function main(mb: number) {\n"
        '  const chunk = ("y".repeat(1023) + "\\n").repeat(1024);\n'
        '  for (let i = 0; i < mb; i++) console.log(chunk);\n  return "done";\n}\n',
        "tree": 'import { spawn } from "node:child_process";\nimport { writeFileSync } from "node:fs";\n\n'
        'export async function main(pidfile: string) {\n  const p = spawn("sleep", ["300"]);\n'
        "  writeFileSync(pidfile, String(p.pid));\n  await new Promise((r) => setTimeout(r, 300000));\n}\n",
        "syntax": "export function main(x: number) {\n  return (x;\n}\n",
    },
    "go": {
        "echo": 'package inner\n\nimport "fmt"\n\nfunc main(name string) (interface{}, error) {\n'
        '\tfmt.Println("greeting", name)\n\treturn map[string]string{"hello": name}, nil\n}\n',
        "raise": 'package inner\n\nimport "errors"\n\nfunc main() (interface{}, error) {\n'
        '\treturn nil, errors.New("boom")\n}\n',
        "big": 'package inner\n\nimport "strings"\n\nfunc main(n int) (string, error) {\n'
        '\treturn strings.Repeat("x", n), nil\n}\n',
        "state": 'package inner\n\nimport wmill "github.com/windmill-labs/windmill-go-client"\n\n'
        "func main() (interface{}, error) {\n\tn := 0\n"
        "\tif s, _ := wmill.GetState(); s != nil {\n\t\tn = int(s.(float64))\n\t}\n"
        "\treturn n + 1, wmill.SetState(n + 1)\n}\n",
        "logs": 'package inner\n\nimport (\n\t"bufio"\n\t"os"\n\t"strings"\n)\n\n'
        "func main(mb int) (string, error) {\n\tw := bufio.NewWriter(os.Stdout)\n"
        '\tline := strings.Repeat("y", 1023) + "\\n"\n'
        "\tfor i := 0; i < mb*1024; i++ {\n\t\tw.WriteString(line)\n\t}\n"
        '\treturn "done", w.Flush()\n}\n',
        "tree": 'package inner\n\nimport (\n\t"os"\n\t"os/exec"\n\t"strconv"\n\t"time"\n)\n\n'
        "func main(pidfile string) (interface{}, error) {\n"
        '\tp := exec.Command("sleep", "300")\n\tif err := p.Start(); err != nil {\n\t\treturn nil, err\n\t}\n'
        "\tos.WriteFile(pidfile, []byte(strconv.Itoa(p.Process.Pid)), 0o644)\n"
        "\ttime.Sleep(300 * time.Second)\n\treturn nil, nil\n}\n",
        "syntax": "package inner\nfunc main(x int) (interface{}, error) { return (x }\n",
    },
}


SCRIPTS["bun"] = SCRIPTS["deno"]


def _args(language: str, args: dict[str, Any]) -> dict[str, Any]:
    """Bash parameters are strings."""
    return {k: str(v) for k, v in args.items()} if language == "bash" else args


def run(language: str, kind: str, args: dict[str, Any], tmp_path: Path, **kw: Any) -> Envelope:
    with (tmp_path / "log").open("ab") as log:
        return run_script(language, SCRIPTS[language][kind], _args(language, args), log=log, **kw)


def run_wrapper(
    language: str, kind: str, args: dict[str, Any], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The wrapper alone, as a pod runs it: no validation, output captured as the container's log."""
    run_dir = tmp_path / "run"
    write_run_files(run_dir, build_run_files(language, SCRIPTS[language][kind], _args(language, args)))
    env = dict(os.environ) | env_for(language, RunContext(workspace="w", job_id="j"), run_dir=str(run_dir))
    done = subprocess.run(
        local_command(language), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return done, run_dir


@pytest.mark.parametrize("language", LANGUAGES)
def test_success_envelope_exit_zero_and_last_log_line(language: str, tmp_path: Path) -> None:
    done, run_dir = run_wrapper(language, "echo", {"name": "ada"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n").split("\n")[-1].startswith(RESULT_PREFIX)
    from_log = envelope_from_logs(done.stdout)
    from_file = parse_envelope((run_dir / "out" / "result.json").read_text())
    from_summary = envelope_from_termination_message((run_dir / "out" / "termination-log").read_text())
    assert from_log == from_file == from_summary
    assert from_file.result == {"hello": "ada"}
    assert "greeting ada" in done.stdout + done.stderr


@pytest.mark.parametrize("language", LANGUAGES)
def test_error_envelope_exit_one(language: str, tmp_path: Path) -> None:
    done, _ = run_wrapper(language, "raise", {}, tmp_path)
    assert done.returncode == 1
    envelope = envelope_from_logs(done.stdout)
    assert envelope is not None
    assert envelope.error is not None
    assert "boom" in envelope.error.message
    assert envelope.result is None


@pytest.mark.parametrize("language", LANGUAGES)
def test_one_mib_result_travels_on_the_log_line_and_the_summary_is_truncated(
    language: str, tmp_path: Path
) -> None:
    n = 1_000_000
    done, run_dir = run_wrapper(language, "big", {"n": n}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    envelope = envelope_from_logs(done.stdout)
    assert envelope is not None
    assert envelope.result == "x" * n
    summary_text = (run_dir / "out" / "termination-log").read_text()
    assert len(summary_text.encode()) <= 4096
    summary = envelope_from_termination_message(summary_text)
    assert summary is not None
    assert summary.truncated
    assert summary.ok


@pytest.mark.parametrize("language", LANGUAGES)
def test_results_over_one_mib_stay_off_the_log(language: str, tmp_path: Path) -> None:
    n = 1_100_000
    done, run_dir = run_wrapper(language, "big", {"n": n}, tmp_path)
    assert done.returncode == 0
    assert envelope_from_logs(done.stdout) is None
    assert parse_envelope((run_dir / "out" / "result.json").read_text()).result == "x" * n


@pytest.mark.parametrize("language", LANGUAGES)
def test_state_persists_between_runs_of_the_same_script(language: str, tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    first = run(language, "state", {}, tmp_path, state_file=state_file)
    second = run(language, "state", {}, tmp_path, state_file=state_file)
    assert (first.result, first.state) == (1, 1)
    assert (second.result, second.state) == (2, 2)
    assert json.loads(state_file.read_text()) == 2


@pytest.mark.parametrize("language", LANGUAGES)
def test_ten_megabytes_of_logs(language: str, tmp_path: Path) -> None:
    envelope = run(language, "logs", {"mb": 10}, tmp_path)
    assert envelope.ok, envelope.error
    assert envelope.result == "done"
    assert (tmp_path / "log").stat().st_size >= 10 * 1024 * 1024


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("language", LANGUAGES)
def test_timeout_kills_the_whole_process_tree(language: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    envelope = run(language, "tree", {"pidfile": str(pidfile)}, tmp_path, timeout=3)
    assert envelope.error is not None
    assert envelope.error.name == "Timeout"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the script's child survived the timeout"


@pytest.mark.parametrize("language", LANGUAGES)
def test_bad_args_name_the_field_and_nothing_starts(language: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidRun, match="name"):
        run(language, "echo", {}, tmp_path)
    # A number where a string is wanted; Bash takes any value as its JSON text (docs/decisions.md), so there
    # null for the required parameter is the wrong arg.
    wrong: dict[str, Any] = {"pidfile": None} if language == "bash" else {"pidfile": 5}
    expected = (
        "pidfile: None is not of type 'string'"
        if language == "bash"
        else "pidfile: 5 is not of type 'string'"
    )
    with pytest.raises(InvalidRun, match=expected):
        run_script(language, SCRIPTS[language]["tree"], wrong)
    assert not (tmp_path / "log").exists() or (tmp_path / "log").stat().st_size == 0


@pytest.mark.parametrize("language", LANGUAGES)
def test_syntax_error_names_the_line(language: str, tmp_path: Path) -> None:
    if language == "python3":
        with pytest.raises(InvalidRun, match="line 2"):
            run(language, "syntax", {"x": 1}, tmp_path)
    done, _ = run_wrapper(language, "syntax", {"x": 1}, tmp_path)
    envelope = envelope_from_logs(done.stdout)
    assert done.returncode == 1
    assert envelope is not None
    assert envelope.error is not None
    assert "line 2" in envelope.error.message
