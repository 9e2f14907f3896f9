"""How each language's runner starts: the container command and the environment a run gets.

The same answers serve a Job's container spec and `kubemill run` on this machine, so they are pure functions
of the language and the run's context; where a local run keeps its files differently, `env_for` points the
runner at them with the KUBEMILL_* overrides described in docs/runners.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

RUNNER_DIR = "/opt/kubemill/runner"
RUN_ROOT = "/var/run/kubemill"
ENTRYPOINT_ENV = "KUBEMILL_ENTRYPOINT"


@dataclass(frozen=True)
class _Language:
    code_file: str
    command: tuple[str, ...]


LANGUAGES: dict[str, _Language] = {
    "python3": _Language("main.py", ("python3", f"{RUNNER_DIR}/run.py")),
    "bash": _Language("main.sh", ("bash", f"{RUNNER_DIR}/run.sh")),
    "deno": _Language(
        "main.ts",
        (
            "deno",
            "run",
            "--allow-all",
            "--no-prompt",
            f"--config={RUNNER_DIR}/deno.json",
            f"{RUNNER_DIR}/run.ts",
        ),
    ),
    "bun": _Language("main.ts", ("bun", "run", f"--preload={RUNNER_DIR}/plugin.ts", f"{RUNNER_DIR}/run.ts")),
    # run.sh runs the script's cached binary, building it with the go toolchain the first time.
    "go": _Language("main.go", ("bash", f"{RUNNER_DIR}/run.sh")),
}

_ALIASES = {"typescript": "deno", "python": "python3", "sh": "bash"}


def canonical_language(language: str) -> str:
    """`typescript` is Deno, as in Windmill; unknown languages are a ValueError naming the known ones."""
    name = _ALIASES.get(language, language)
    if name not in LANGUAGES:
        raise ValueError(
            f"unsupported language {language!r} (expected one of {', '.join(sorted(LANGUAGES))})"
        )
    return name


def code_filename(language: str) -> str:
    """The file the runner loads from the code directory (`main.py`, `main.ts`, `main.go`, `main.sh`)."""
    return LANGUAGES[canonical_language(language)].code_file


def command_for(language: str, *, locked: bool = False) -> list[str]:
    """The container command; its first word is the interpreter and the runner lives under RUNNER_DIR. A
    `locked` Bun run (its Script has a lock) has Bun's auto-install off: the lock's install is all it gets."""
    command = list(LANGUAGES[canonical_language(language)].command)
    if locked and canonical_language(language) == "bun":
        command.insert(2, "--no-install")
    return command


@dataclass(frozen=True)
class RunContext:
    """Who and what a run is, as Windmill's WM_* variables tell a script."""

    workspace: str
    job_id: str
    job_path: str = ""
    flow_job_id: str = ""
    root_flow_job_id: str = ""
    flow_path: str = ""
    flow_step_id: str = ""
    schedule_path: str = ""
    state_path: str = ""
    scheduled_for: str = ""
    email: str = ""
    username: str = ""
    base_url: str = ""
    entrypoint: str = "main"
    """What the runner calls: `main`, `preprocessor` or `preprocessor-then-main` (engine/entrypoints.py); only
    the operator or `kubemill run` sets it, never a run's args."""


def env_for(
    language: str,
    context: RunContext,
    *,
    run_dir: str | None = None,
    state_file: str | None = None,
    requirements: tuple[str, ...] = (),
) -> dict[str, str]:
    """The run's environment. In a pod the files sit at their default paths under /var/run/kubemill; with
    `run_dir` (a local run) they sit in that directory, laid out as `rundir.build_run_files` writes them."""
    canonical_language(language)
    env = {
        "WM_WORKSPACE": context.workspace,
        "WM_JOB_ID": context.job_id,
        "WM_JOB_PATH": context.job_path,
        "WM_FLOW_JOB_ID": context.flow_job_id,
        "WM_ROOT_FLOW_JOB_ID": context.root_flow_job_id or context.flow_job_id,
        "WM_FLOW_PATH": context.flow_path,
        "WM_FLOW_STEP_ID": context.flow_step_id,
        "WM_SCHEDULE_PATH": context.schedule_path,
        "WM_STATE_PATH": context.state_path or context.job_path,
        "WM_SCHEDULED_FOR": context.scheduled_for,
        "WM_EMAIL": context.email,
        "WM_USERNAME": context.username,
        "WM_BASE_URL": context.base_url,
        "BASE_INTERNAL_URL": context.base_url,
        ENTRYPOINT_ENV: context.entrypoint,
    }
    if requirements:
        env["KUBEMILL_REQUIREMENTS"] = "\n".join(requirements)
    if run_dir is not None:
        root = PurePosixPath(run_dir)
        env |= {
            "KUBEMILL_CODE_DIR": str(root / "code"),
            "KUBEMILL_ARGS_FILE": str(root / "args.json"),
            "KUBEMILL_RESOURCES_DIR": str(root / "resources"),
            "KUBEMILL_RESULT_FILE": str(root / "out" / "result.json"),
            "KUBEMILL_TERMINATION_LOG": str(root / "out" / "termination-log"),
            "KUBEMILL_RESUME_URLS_FILE": str(root / "resume-urls.json"),
            "KUBEMILL_STATE_FILE": state_file or str(root / "state" / "state.json"),
        }
    elif state_file is not None:
        env["KUBEMILL_STATE_FILE"] = state_file
    return env
