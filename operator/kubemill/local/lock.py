"""`kubemill lock`: pin each Python and Bun script's dependencies into `<name>.script.lock`, as Windmill does.

A script's requirements are what the Python runner would install without a lock (the same functions, loaded
from runner_images/python3/run.py): a `# requirements:` header or a PEP 723 block, else its third-party
imports; plus its metadata's `requirements`. `uv pip compile --generate-hashes` resolves them for the Python
that runs scripts, preferring the versions an existing lock already pins (so re-running changes nothing until
`--upgrade`). The lock is written in Windmill's format (runners/lockfile.py), atomically, and only when its
text changes; `--check` writes nothing and fails when a lock is missing or differs from what the script
resolves to (a pin added by hand, a hash changed, a new import). Bun scripts are resolved by `local.bun_lock`
(package.json from the imports, bun.lock from `bun install`), into Windmill's Bun lock.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from kubemill.local.bun_lock import LockFailed, bun_difference, resolve_bun
from kubemill.local.scripts import (
    EXIT_FAILED,
    EXIT_INVALID,
    InvalidRun,
    ScriptTarget,
    lock_file_of,
    resolve_target,
)
from kubemill.runners.lockfile import (
    LOCKED_LANGUAGES,
    LockError,
    Pin,
    PythonLock,
    as_requirements,
    format_bun_lock,
    format_python_lock,
    normalize,
    parse_bun_lock,
    parse_python_lock,
    parse_uv_compile,
)
from kubemill.runners.runtimes import RuntimeMissing, find_uv, local_command, runner_images_dir

FLOW_FOLDERS = (".flow", "__flow")
L = TypeVar("L")
_SKIP_DIRS = ("node_modules", ".venv", "__pycache__")


@dataclass(frozen=True)
class Outcome:
    script: str
    lock: Path
    status: str  # "written", "unchanged", "stale", "missing", "none" (no dependencies), "removed"
    detail: str = ""


def add_arguments_lock(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="script files or folders (default: the workspace)"
    )
    parser.add_argument("--workspace", help="the Windmill-layout workspace (default: the current folder)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; fail if a lock is missing or stale"
    )
    parser.add_argument("--upgrade", action="store_true", help="re-resolve to the newest versions")


def _runner() -> ModuleType:
    """The Python runner's own module: its `_requirements` and `_imports` decide what a script needs."""
    spec = importlib.util.spec_from_file_location(
        "_kubemill_python_runner", runner_images_dir() / "python3" / "run.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requirements_of(code: str, meta: dict[str, Any] | Any) -> list[str]:
    """What the runner would install for `code` without a lock (declared, else imported), plus the
    metadata's `requirements`."""
    runner = _runner()
    declared: list[str] = runner._requirements(code) or runner._imports(code)
    extra = [str(r) for r in (meta.get("requirements") or ())] if isinstance(meta, dict) else []
    return list(dict.fromkeys(declared + extra))


def _python() -> str:
    try:
        return local_command("python3")[0]
    except RuntimeMissing as exc:
        raise LockFailed(str(exc)) from exc


def _python_version(python: str) -> str:
    done = subprocess.run(  # noqa: S603 - a fixed argv, no shell
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def resolve(script: str, requirements: list[str], previous: PythonLock | None, upgrade: bool) -> PythonLock:
    """Pin `requirements` with uv for the Python that runs scripts (previous pins preferred)."""
    uv = find_uv()
    if uv is None:
        raise LockFailed("uv is not installed (scripts/install-runtimes puts it in the virtualenv)")
    python = _python()
    version = _python_version(python)
    if not requirements:
        return PythonLock(version, ())
    with tempfile.TemporaryDirectory(prefix="kubemill-lock-") as tmp:
        source, output = Path(tmp, "requirements.in"), Path(tmp, "requirements.txt")
        source.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        if previous is not None and not upgrade:
            # uv keeps these versions; without their hashes, which uv would carry over unchecked
            pins = PythonLock(previous.python, tuple(Pin(p.name, p.version) for p in previous.pins))
            output.write_text(as_requirements(pins), encoding="utf-8")
        command = [uv, "pip", "compile", str(source), "-o", str(output), "--generate-hashes", "--no-header"]
        command += [
            "--strip-extras",
            "--quiet",
            "--no-config",
            "--python",
            python,
            "--python-version",
            version,
        ]
        if upgrade:
            command.append("--upgrade")
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=dict(os.environ))  # noqa: S603 - a fixed argv, no shell
        if done.returncode != 0:
            raise LockFailed(_explain(script, requirements, done.stderr))
        return parse_uv_compile(output.read_text(encoding="utf-8"), version)


def _explain(script: str, requirements: list[str], stderr: str) -> str:
    """uv's failure, naming the requirements it names (the unresolvable packages)."""
    text = " ".join(stderr.split())
    named = [
        r for r in requirements if normalize(r.split("=")[0].split("<")[0].split(">")[0]) in normalize(text)
    ]
    which = f" (cannot resolve {', '.join(named)})" if named else ""
    return f"{script}: uv pip compile failed{which}: {text[:600]}"


def _previous(lock_path: Path, parse: Callable[[str], L]) -> tuple[str | None, L | None, str]:
    """The lock file's text, the lock it holds (None when absent or unreadable) and why it is unreadable."""
    text = lock_path.read_text(encoding="utf-8") if lock_path.is_file() else None
    try:
        return text, (parse(text) if text is not None else None), ""
    except LockError as exc:
        return text, None, f"the lock cannot be read: {exc}"


def _settle(
    target: ScriptTarget, lock_path: Path, old: str | None, new: str, check: bool, why: str
) -> Outcome:
    """Write the lock `new` where the file holds `old` (with `check`, only say whether they differ, `why`)."""
    if new == old:
        return Outcome(target.path, lock_path, "unchanged")
    if check:
        return Outcome(
            target.path, lock_path, "missing" if old is None else "stale", "" if old is None else why
        )
    _write_atomically(lock_path, new)
    return Outcome(target.path, lock_path, "written")


def lock_script(target: ScriptTarget, workspace: Path, check: bool, upgrade: bool) -> Outcome:
    lock_path = lock_file_of(target.file)
    assert lock_path is not None
    code = target.file.read_text(encoding="utf-8")
    previous_text, previous, unreadable = _previous(lock_path, parse_python_lock)
    if unreadable and check:
        return Outcome(target.path, lock_path, "stale", unreadable)
    requirements = requirements_of(code, dict(target.meta))
    if not requirements:  # as Windmill: a script without dependencies has no lock file
        if previous_text is None:
            return Outcome(target.path, lock_path, "none")
        if check:
            return Outcome(target.path, lock_path, "stale", "the script needs no dependencies")
        lock_path.unlink()
        return Outcome(target.path, lock_path, "removed")
    wanted = resolve(target.path, requirements, previous, upgrade)
    return _settle(
        target, lock_path, previous_text, format_python_lock(wanted), check, _difference(previous, wanted)
    )


def lock_bun_script(target: ScriptTarget, check: bool, upgrade: bool) -> Outcome:
    """A Bun script's lock, always written (`<empty>` without dependencies, as Windmill writes it)."""
    lock_path = lock_file_of(target.file)
    assert lock_path is not None
    previous_text, previous, unreadable = _previous(lock_path, parse_bun_lock)
    if unreadable and check:
        return Outcome(target.path, lock_path, "stale", unreadable)
    wanted = resolve_bun(target.path, target.file, previous, upgrade)
    text = format_bun_lock(wanted)
    return _settle(target, lock_path, previous_text, text, check, bun_difference(previous, wanted))


def _difference(old: PythonLock | None, new: PythonLock) -> str:
    if old is None:
        return "the lock cannot be read"
    before = {normalize(p.name): p for p in old.pins}
    after = {normalize(p.name): p for p in new.pins}
    notes = [
        f"pins {before[n].requirement}, which the script does not resolve to"
        for n in before
        if n not in after
    ]
    notes += [f"lacks {after[n].requirement}" for n in after if n not in before]
    for name in before.keys() & after.keys():
        a, b = before[name], after[name]
        if a.version != b.version:
            notes.append(f"pins {a.requirement}, the script resolves to {b.requirement}")
        elif set(a.hashes) != set(b.hashes):
            notes.append(f"the hashes of {a.requirement} differ from the index's")
    if old.python != new.python and not notes:
        notes.append(f"was resolved for Python {old.python}, not {new.python}")
    return "; ".join(sorted(notes)) or "differs in layout (rewrite it with `kubemill lock`)"


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _script_files(paths: list[str], workspace: Path) -> list[Path]:
    found: list[Path] = []
    for given in [Path(p) for p in paths] or [workspace]:
        if given.is_dir():
            for folder, dirs, files in os.walk(given):
                dirs[:] = sorted(
                    d
                    for d in dirs
                    if not d.startswith(".") and d not in _SKIP_DIRS and not d.endswith(FLOW_FOLDERS)
                )  # a flow's inline scripts have their locks in its flow.yaml
                found += [Path(folder, f) for f in sorted(files) if f.endswith((".py", ".ts"))]
        elif given.is_file():
            found.append(given)
        else:
            raise InvalidRun(f"{given}: no such file or folder")
    return found


def cli_lock(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace or ".").resolve()
    try:
        targets = [resolve_target(str(f), workspace) for f in _script_files(args.paths, workspace)]
    except InvalidRun as exc:
        print(f"kubemill lock: {exc}", file=sys.stderr)
        return EXIT_INVALID
    failed = False
    for target in targets:
        if target.language not in LOCKED_LANGUAGES:
            print(
                f"kubemill lock: {target.path}: skipped ({target.language} scripts are not locked)",
                file=sys.stderr,
            )
            continue
        try:
            if target.language == "bun":
                outcome = lock_bun_script(target, args.check, args.upgrade)
            else:
                outcome = lock_script(target, workspace, args.check, args.upgrade)
        except (LockFailed, OSError, subprocess.CalledProcessError) as exc:
            print(f"kubemill lock: {exc}", file=sys.stderr)
            failed = True
            continue
        if outcome.status == "none":
            continue
        shown = os.path.relpath(outcome.lock, Path.cwd())
        detail = f": {outcome.detail}" if outcome.detail else ""
        print(f"{outcome.status:9} {shown}{detail}")
        failed |= outcome.status in ("stale", "missing")
    return EXIT_FAILED if failed else 0
