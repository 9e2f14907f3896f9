"""Run a script on this machine, the way a runner pod would, without a cluster (`kubemill run`'s script side).

A run here is the pod's run in miniature: the same run directory (`runners.rundir`), the same runner wrapper
from runner_images/ and the same envelope, with the interpreter found on this machine. Arguments are checked
against the schema derived from `main` before anything starts. `run_script` is the seam the flow engine's
local mode calls for each script step.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import yaml

from kubemill.paths import OutsideWorkspace, confined
from kubemill.runners import (
    Envelope,
    RunContext,
    build_run_files,
    canonical_language,
    env_for,
    parse_envelope,
    write_run_files,
)
from kubemill.runners.forkserver import TIMED_OUT, ForkServers, ServerGone
from kubemill.runners.lockfile import LOCKED_LANGUAGES, LockError, check_lock
from kubemill.runners.runtimes import RuntimeMissing, cache_root, find_uv, local_command
from kubemill.runners.validation import args_for_language, run_args, validate_args
from kubemill.secrets import UnresolvedReference, has_references, substitute_references
from kubemill.signatures import SignatureError, derive_schema, language_for_path

EXIT_FAILED = 1
EXIT_INVALID = 2
_SUFFIXES = (".py", ".deno.ts", ".bun.ts", ".ts", ".go", ".sh")


class InvalidRun(Exception):
    """The run cannot start: bad arguments, unreadable code, or a target that does not exist."""


# --- arguments ----------------------------------------------------------------------------------------------


def schema_for(language: str, code: str) -> dict[str, Any]:
    """The schema derived from `main`; InvalidRun naming the line when the code does not parse."""
    try:
        return derive_schema(canonical_language(language), code)
    except SignatureError as exc:
        line = getattr(exc, "line", None)
        where = f" (line {line})" if line and f"line {line}" not in str(exc) else ""
        raise InvalidRun(f"the script does not parse{where}: {exc}") from exc


# --- running ------------------------------------------------------------------------------------------------


def default_context(job_path: str, workspace: str) -> RunContext:
    return RunContext(
        workspace=workspace, job_id=str(uuid.uuid4()), job_path=job_path, username=getpass.getuser()
    )


def run_script(  # noqa: PLR0913 - complexity debt, docs/architecture.md
    language: str,
    code: str,
    args: Mapping[str, Any],
    *,
    resources: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
    context: RunContext | None = None,
    state_file: Path | None = None,
    timeout: float | None = None,
    requirements: tuple[str, ...] = (),
    schema: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    log: IO[Any] | int | None = None,
    shared_dir: Path | None = None,
    servers: ForkServers | None = None,
    entrypoint: str = "main",
    lock: str | None = None,
) -> Envelope:
    """Validate `args`, run `main` in a child process and return its envelope.

    Raises InvalidRun (nothing was started) for bad code or args. The script's stdout and stderr go to `log`
    (default: this process's stderr). A timeout kills the script's whole process group. With `shared_dir`,
    the script's working directory has it as `./shared`. With `servers` (a flow's warm interpreters), a
    language that has a fork server starts from it instead of a new interpreter. `entrypoint` (from
    `engine.entrypoints.plan_call`) calls the script's preprocessor: its args are an event, not main's, and
    are not checked against main's schema. With `lock` (a Python or Bun `.script.lock`), the runner installs
    exactly the lock instead of what the script declares or imports.
    """
    language = canonical_language(language)
    if lock is not None:
        try:
            check_lock(language, lock)
        except LockError as exc:
            raise InvalidRun(f"the lock cannot be used: {exc}") from exc
    if entrypoint == "main":
        schema = schema if schema is not None else schema_for(language, code)
        args = args_for_language(language, args)
        problems = [  # a `$res:`/`$var:` arg is checked when resolved, as on a cluster
            p
            for p in validate_args(schema, args, language)
            if not has_references(args.get(p.field.split(".")[0]))
        ]
        if problems:
            raise InvalidRun("invalid args: " + "; ".join(map(str, problems)))
        try:
            args = substitute_references(args, resources or {}, variables or {})
        except UnresolvedReference as exc:
            raise InvalidRun(f"{exc.reason}: {exc.message}") from exc
        args = run_args(schema, args)
    context = context or default_context("", "local")
    context = replace(context, entrypoint=entrypoint)
    try:
        command = local_command(language, locked=lock is not None)
    except RuntimeMissing as exc:
        raise InvalidRun(str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="kubemill-run-") as tmp:
        run_dir = Path(tmp)
        write_run_files(run_dir, build_run_files(language, code, args, resources, variables, lock))
        if shared_dir is not None:  # a `same_worker` flow's steps share ./shared, as in Windmill
            (run_dir / "shared").symlink_to(shared_dir, target_is_directory=True)
        child_env = dict(os.environ)
        child_env |= env or {}
        child_env |= env_for(
            language,
            context,
            run_dir=str(run_dir),
            state_file=str(state_file) if state_file else None,
            requirements=requirements,
        )
        child_env |= {"KUBEMILL_LOG_RESULT": "0", "KUBEMILL_CACHE_DIR": str(cache_root() / "deps")}
        child_env.setdefault("DENO_DIR", str(cache_root() / "deno"))
        uv = find_uv()
        if uv:
            child_env.setdefault("KUBEMILL_UV", uv)
        output = sys.stderr.fileno() if log is None else log
        if servers is not None and servers.serves(language):
            with contextlib.suppress(ServerGone):  # a server gone: this run is spawned as without one
                fd = output if isinstance(output, int) else output.fileno()
                exit_code = servers.run(language, run_dir, child_env, fd, timeout)
                return _envelope_of(run_dir, language, exit_code, timeout)
        process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            command,
            cwd=run_dir,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        try:
            code_ = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return Envelope.failure(
                "Timeout", f"the script ran longer than {timeout:g} s; its whole process tree was killed"
            )
        finally:
            _kill_group(process)  # no orphans left behind in the group after a normal exit either
        return _envelope_of(run_dir, language, code_, timeout)


def _envelope_of(run_dir: Path, language: str, exit_code: int, timeout: float | None) -> Envelope:
    if exit_code == TIMED_OUT:
        return Envelope.failure(
            "Timeout", f"the script ran longer than {timeout:g} s; its whole process tree was killed"
        )
    result_file = run_dir / "out" / "result.json"
    if not result_file.exists():
        return Envelope.failure(
            "RunnerFailed", f"the {language} runner exited with code {exit_code} without writing a result"
        )
    return parse_envelope(result_file.read_text(encoding="utf-8"))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# --- Windmill-layout workspaces -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    """A `wmill sync pull` folder: scripts under f/ and u/, resources and variables as YAML files."""

    root: Path
    resources: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.name or "local"


def _windmill_path(root: Path, file: Path, suffix: str) -> str:
    return file.relative_to(root).as_posix()[: -len(suffix)]


def _files_ending(root: Path, suffix: str) -> list[Path]:
    """Files under `root` named `*<suffix>`, sorted. Hidden folders and node_modules are not searched: a
    workspace keeps nothing there, and `kubemill run` from a big folder must not walk all of it."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "node_modules"]
        found += [Path(folder, f) for f in files if f.endswith(suffix)]
    return sorted(found)


def load_workspace(root: Path) -> Workspace:
    resources: dict[str, Any] = {}
    variables: dict[str, str] = {}
    for file in _files_ending(root, ".resource.yaml"):
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        resources[_windmill_path(root, file, ".resource.yaml")] = data.get("value")
    for file in _files_ending(root, ".variable.yaml"):
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        value = data.get("value", "")
        variables[_windmill_path(root, file, ".variable.yaml")] = (
            value if isinstance(value, str) else json.dumps(value)
        )
    return Workspace(root, resources, variables)


@dataclass(frozen=True)
class ScriptTarget:
    file: Path
    path: str  # the Windmill path, or the file name outside a workspace
    language: str
    meta: Mapping[str, Any]


def _language_of(file: Path, meta: Mapping[str, Any]) -> str:
    if meta.get("language"):
        return canonical_language(str(meta["language"]))
    try:
        return language_for_path(file.name)
    except ValueError as exc:
        raise InvalidRun(str(exc)) from exc


def lock_for(target: ScriptTarget, workspace: Path) -> str | None:
    """A Python or Bun script's lock: its metadata's `lock` (text, or `!inline <file>` from the workspace
    root, as `wmill sync pull` writes it), else `<name>.script.lock` beside it (`kubemill lock`); None
    without one."""
    if target.language not in LOCKED_LANGUAGES:
        return None
    value = target.meta.get("lock")
    if isinstance(value, str) and value.startswith("!inline "):
        try:
            return confined(workspace, value.split(" ", 1)[1].strip()).read_text(encoding="utf-8")
        except (OutsideWorkspace, OSError) as exc:
            raise InvalidRun(f"{target.file.name}: lock {value!r}: {exc}") from exc
    if isinstance(value, str) and value.strip():
        return value
    sibling = lock_file_of(target.file)
    return sibling.read_text(encoding="utf-8") if sibling is not None and sibling.is_file() else None


def lock_file_of(file: Path) -> Path | None:
    """`<name>.script.lock` for the script file `<name>.<suffix>` (None for a file that is not a script)."""
    suffix = next((s for s in _SUFFIXES if file.name.endswith(s)), None)
    return file.with_name(file.name[: -len(suffix)] + ".script.lock") if suffix else None


def _meta_for(file: Path) -> dict[str, Any]:
    name = file.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            candidate = file.with_name(name[: -len(suffix)] + ".script.yaml")
            if candidate.exists():
                loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
                return loaded if isinstance(loaded, dict) else {}
    return {}


def resolve_target(target: str, workspace: Path) -> ScriptTarget:
    """A script file, or a Windmill path (`f/folder/name`) looked up in the workspace."""
    given = Path(target)
    if given.is_file():
        file = given.resolve()
        try:
            path = file.relative_to(workspace.resolve()).as_posix()
            path = next((path[: -len(s)] for s in _SUFFIXES if path.endswith(s)), path)
        except ValueError:
            path = file.name
    else:
        path = target.strip("/")
        found = [workspace / f"{path}{s}" for s in _SUFFIXES if (workspace / f"{path}{s}").is_file()]
        if not found:
            raise InvalidRun(f"no script file {target!r} and no script {path} in workspace {workspace}")
        file = found[0]
    meta = _meta_for(file)
    return ScriptTarget(file, path, _language_of(file, meta), meta)


def default_state_file(workspace: Path, path: str) -> Path:
    """Where a script's state persists between local runs: one file per workspace and script."""
    key = hashlib.sha256(f"{workspace.resolve()}\0{path}".encode()).hexdigest()[:24]
    return cache_root() / "state" / f"{key}.json"
