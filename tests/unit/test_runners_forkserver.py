"""The Python fork server: runs forked from a warm interpreter behave as spawned ones, and share nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubemill.local.scripts import run_script
from kubemill.runners import Envelope, RunContext
from kubemill.runners.forkserver import ForkServers


@pytest.fixture
def servers() -> Iterator[ForkServers]:
    with ForkServers() as warm:
        yield warm


def run(code: str, args: dict[str, Any], tmp_path: Path, **kw: Any) -> Envelope:
    with (tmp_path / "log").open("ab") as log:
        return run_script("python3", code, args, log=log, **kw)


def _server_pid(servers: ForkServers) -> int:
    return servers._servers["python3"].process.pid


@pytest.mark.parametrize(
    "code",
    [
        "def main(n: int = 0):\n    return {'n': n + 1}\n",
        "def main(n: int = 0):\n    raise ValueError(f'bad {n}')\n",
        "async def main(n: int = 0):\n    return [n, n]\n",
        "import wmill\n\ndef main(n: int = 0):\n    return wmill.get_workspace()\n",
    ],
)
def test_a_forked_run_gives_the_envelope_a_spawned_run_gives(
    code: str, servers: ForkServers, tmp_path: Path
) -> None:
    context = RunContext(workspace="ws", job_id="j1")
    spawned = run(code, {"n": 2}, tmp_path, context=context)
    forked = run(code, {"n": 2}, tmp_path, context=context, servers=servers)
    assert forked.result == spawned.result
    assert (forked.error is None) == (spawned.error is None)
    if spawned.error is not None:
        assert forked.error is not None
        assert (forked.error.name, forked.error.message) == (spawned.error.name, spawned.error.message)


def test_one_run_leaves_nothing_for_the_next(servers: ForkServers, tmp_path: Path) -> None:
    leaky = (
        "import json, os, sys\n\n"
        "def main(secret: str):\n"
        "    os.environ['LEAKED'] = secret\n"
        "    json.LEAKED = secret\n"
        "    sys.modules['leaked_module'] = sys\n"
        "    return os.environ['WM_JOB_ID']\n"
    )
    first = run(leaky, {"secret": "s3cr3t"}, tmp_path, servers=servers, context=RunContext("ws", "job-1"))
    assert first.result == "job-1"
    probe = (
        "import json, os, sys\n\n"
        "def main():\n"
        "    return [os.environ.get('LEAKED'), getattr(json, 'LEAKED', None),\n"
        "            'leaked_module' in sys.modules, os.environ['WM_JOB_ID'], os.getpid()]\n"
    )
    second = run(probe, {}, tmp_path, servers=servers, context=RunContext("ws", "job-2"))
    assert second.result[:4] == [None, None, False, "job-2"]
    third = run(probe, {}, tmp_path, servers=servers, context=RunContext("ws", "job-3"))
    assert third.result[4] != second.result[4]  # a fresh process each time
    assert "LEAKED" not in os.environ


def test_output_goes_to_the_runs_log(servers: ForkServers, tmp_path: Path) -> None:
    code = "import sys\n\ndef main():\n    print('to stdout')\n    print('to stderr', file=sys.stderr)\n"
    assert run(code, {}, tmp_path, servers=servers).error is None
    log = (tmp_path / "log").read_text()
    assert "to stdout" in log and "to stderr" in log


def test_a_timeout_kills_the_runs_whole_process_group(servers: ForkServers, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, time\n\n"
        "def main(pid_file: str):\n"
        "    child = subprocess.Popen(['sleep', '300'])\n"
        "    open(pid_file, 'w').write(str(child.pid))\n"
        "    time.sleep(300)\n"
    )
    envelope = run(code, {"pid_file": str(pid_file)}, tmp_path, servers=servers, timeout=2.0)
    assert envelope.error is not None and envelope.error.name == "Timeout"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild):
        assert time.monotonic() < deadline, "the run's subprocess outlived its timeout"
        time.sleep(0.05)
    # The server is still there and serves the next run.
    assert run("def main():\n    return 1\n", {}, tmp_path, servers=servers).result == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def test_a_server_killed_mid_run_fails_that_run_once_and_a_new_server_takes_the_next(
    servers: ForkServers, tmp_path: Path
) -> None:
    assert run("def main():\n    return 0\n", {}, tmp_path, servers=servers).result == 0
    server = _server_pid(servers)
    marks = tmp_path / "marks"
    code = (
        "import os, signal, time\n\n"
        "def main(marks: str):\n"
        "    with open(marks, 'a') as f:\n"
        "        f.write('started\\n')\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"
        "    time.sleep(300)\n"
    )
    envelope = run(code, {"marks": str(marks)}, tmp_path, servers=servers, timeout=60)
    assert envelope.error is not None and envelope.error.name == "RunnerFailed"
    assert marks.read_text() == "started\n"  # never started a second time
    assert run("def main():\n    return 2\n", {}, tmp_path, servers=servers).result == 2
    assert _server_pid(servers) != server


def test_closing_ends_the_server(tmp_path: Path) -> None:
    servers = ForkServers()
    assert run("def main():\n    return 3\n", {}, tmp_path, servers=servers).result == 3
    process = servers._servers["python3"].process
    servers.close()
    assert process.poll() is not None
