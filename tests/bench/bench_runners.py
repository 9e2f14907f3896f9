"""Runner overhead: a wrapper's run of a trivial `main` against a bare start of the same interpreter.

Plain script (`make bench`): prints one line per language with the medians of RUNS runs in milliseconds.
Languages whose interpreter is missing here are reported as such. Target: < 50 ms for Python and Bash. For
Python, one more line gives a run's whole cost through the warm fork server (target <= 20 ms).
Go's wrapper time is a cached run (the script's binary already built; bare is `go version`); one more line
gives the first run of a script not built yet (Go's own build cache warm).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubemill.runners import RunContext, build_run_files, env_for, write_run_files
from kubemill.runners.forkserver import ForkServers
from kubemill.runners.runtimes import RuntimeMissing, find_interpreter, local_command

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
TRIVIAL = {
    "python3": ("def main(x: int = 1):\n    return x\n", ["-c", "pass"]),
    "bash": ('x="${1:-1}"\necho "$x"\n', ["-c", "true"]),
    "deno": ("export function main(x: number = 1) { return x; }\n", ["eval", ""]),
    "bun": ("export function main(x: number = 1) { return x; }\n", ["-e", ""]),
    "go": ("package inner\n\nfunc main(x int) (interface{}, error) { return x, nil }\n", ["version"]),
}
TARGET_MS = {"python3": 50.0, "bash": 50.0}
FORK_TARGET_MS = 20.0


def _median_ms(command: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(language: str) -> str:
    code, bare_args = TRIVIAL[language]
    try:
        interpreter = find_interpreter(language)
        command = local_command(language)
    except RuntimeMissing as exc:
        return f"{language:8} skipped: {exc}"
    with tempfile.TemporaryDirectory() as tmp:
        write_run_files(Path(tmp), build_run_files(language, code, {"x": 1} if language != "bash" else {}))
        env = dict(os.environ) | env_for(language, RunContext(workspace="bench", job_id="b"), run_dir=tmp)
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        bare = _median_ms([interpreter, *bare_args], env)
        wrapped = _median_ms(command, env)
        if language == "go":
            first = _first_build_ms(command, env, tmp, code)
    overhead = wrapped - bare
    target = TARGET_MS.get(language)
    verdict = "" if target is None else ("  ok" if overhead < target else f"  OVER {target:.0f} ms target")
    line = (
        f"{language:8} bare {bare:7.1f} ms  wrapper {wrapped:7.1f} ms  overhead {overhead:7.1f} ms "
        f"(median of {RUNS}){verdict}"
    )
    if language == "go":
        line += f"\n{'':8} first run of a new script (build): {first:7.1f} ms"
    return line


def _first_build_ms(command: list[str], env: dict[str, str], run_dir: str, code: str) -> float:
    """One run of the trivial script made unique, so its binary is built (into a throwaway cache)."""
    with tempfile.TemporaryDirectory() as cache:
        (Path(run_dir) / "code" / "main.go").write_text(f"{code}\n// {time.time_ns()}\n")
        start = time.perf_counter()
        subprocess.run(
            command,
            env=env | {"KUBEMILL_CACHE_DIR": cache},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        return (time.perf_counter() - start) * 1000


def bench_forkserver() -> str:
    """The Python wrapper's whole cost per run through the fork server that `kubemill run` of a flow (and a
    pool worker) keeps warm: request sent -> exit code back, the run's files already written."""
    code, _ = TRIVIAL["python3"]
    null = os.open(os.devnull, os.O_WRONLY)
    with tempfile.TemporaryDirectory() as tmp, ForkServers() as servers:
        write_run_files(Path(tmp), build_run_files("python3", code, {"x": 1}))
        env = dict(os.environ) | env_for("python3", RunContext(workspace="bench", job_id="b"), run_dir=tmp)
        env["KUBEMILL_LOG_RESULT"] = "0"
        times = []
        for i in range(RUNS + 1):
            start = time.perf_counter()
            exit_code = servers.run("python3", Path(tmp), env, null)
            if i:  # the first run starts the server
                times.append((time.perf_counter() - start) * 1000)
            assert exit_code == 0, exit_code
    os.close(null)
    median = statistics.median(times)
    verdict = "  ok" if median <= FORK_TARGET_MS else f"  OVER {FORK_TARGET_MS:.0f} ms target"
    return f"python3  fork server: a run {median:7.1f} ms (median of {RUNS}, wrapper's whole cost){verdict}"


def main() -> int:
    for language in sys.argv[1:] or list(TRIVIAL):
        print(bench(language), flush=True)
        if language == "python3":
            print(bench_forkserver(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
