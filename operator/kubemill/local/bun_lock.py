"""`kubemill lock` for Bun scripts: what Windmill's Bun dependency job does, on this machine.

The script's run-time imports come from Bun's own transpiler (runner_images/bun/imports.ts: type-only imports
and built-in modules left out); `runners.lockfile.bun_dependencies` turns them into package.json's
`dependencies` as Windmill's builder does (a version pinned in the import string, else `latest`; kubemill's
`windmill-client` is the runner's own, so it is not a dependency). The real `bun install --lockfile-only`
resolves them against the npm registry into bun.lock, integrity hashes included, keeping the versions an
existing lock already resolved (its bun.lock is given to Bun without the integrity hashes, which Bun asks the
registry for again) until `--upgrade`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from kubemill.runners.lockfile import (
    BunLock,
    LockError,
    bun_dependencies,
    format_package_json,
    without_integrity,
)
from kubemill.runners.runtimes import RuntimeMissing, cache_root, find_interpreter, runner_images_dir


class LockFailed(Exception):
    """A script's dependencies cannot be resolved; the message names the script and the package."""


def _bun() -> str:
    try:
        return find_interpreter("bun")
    except RuntimeMissing as exc:
        raise LockFailed(str(exc)) from exc


def _env() -> dict[str, str]:
    cache = cache_root() / "deps" / "bun" / "install-cache"  # registry metadata and tarballs
    return dict(os.environ, BUN_INSTALL_CACHE_DIR=str(cache), DO_NOT_TRACK="1")


def imports_of(script: str, file: Path) -> list[str]:
    """The import strings of `file` that Bun loads at run time (not type-only, not built-in)."""
    command = [_bun(), str(runner_images_dir() / "bun" / "imports.ts"), str(file)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=_env())  # noqa: S603 - a fixed argv, no shell
    if done.returncode != 0:
        reason = " ".join(done.stderr.split())[:600]
        raise LockFailed(f"{script}: Bun could not read its imports: {reason}")
    found = json.loads(done.stdout)
    return [str(s) for s in found]


def resolve_bun(script: str, file: Path, previous: BunLock | None, upgrade: bool) -> BunLock:
    """The script's Bun lock: package.json from its imports, bun.lock from `bun install` (None without
    dependencies: Windmill's `<empty>`)."""
    try:
        deps = bun_dependencies(imports_of(script, file))
    except LockError as exc:
        raise LockFailed(f"{script}: {exc}") from None
    package_json = format_package_json(deps)
    if not deps:
        return BunLock(package_json, None)
    with tempfile.TemporaryDirectory(prefix="kubemill-lock-") as tmp:
        Path(tmp, "package.json").write_text(package_json, encoding="utf-8")
        if previous is not None and previous.bun_lock is not None and not upgrade:
            # the versions kept, the integrity asked of the registry again (so --check sees a changed hash)
            Path(tmp, "bun.lock").write_text(without_integrity(previous.bun_lock), encoding="utf-8")
        command = [_bun(), "install", "--lockfile-only", "--save-text-lockfile", "--ignore-scripts"]
        command += ["--no-progress", "--no-summary"]
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False, env=_env())  # noqa: S603 - a fixed argv, no shell
        if done.returncode != 0:
            text = " ".join((done.stdout + done.stderr).split())
            named = [name for name in deps if name in text]
            which = f" (cannot resolve {', '.join(f'{n}@{deps[n]}' for n in named)})" if named else ""
            raise LockFailed(f"{script}: bun install failed{which}: {text[:600]}")
        return BunLock(package_json, Path(tmp, "bun.lock").read_text(encoding="utf-8"))


def bun_difference(old: BunLock | None, new: BunLock) -> str:
    """What `kubemill lock --check` reports for a stale Bun lock."""
    if old is None:
        return "the lock cannot be read"
    before, after = old.dependencies(), new.dependencies()
    notes = [f"names {n}, which the script does not import" for n in before if n not in after]
    notes += [f"lacks {n}@{after[n]}" for n in after if n not in before]
    notes += [
        f"has {n}@{before[n]}, the script imports {n}@{after[n]}"
        for n in before.keys() & after.keys()
        if before[n] != after[n]
    ]
    if not notes:
        was, now = old.packages(), new.packages()
        for key in sorted(was.keys() | now.keys()):
            a, b = was.get(key), now.get(key)
            if a is None or b is None or a[0] != b[0]:
                notes.append(
                    f"resolves {a[0] if a else 'no ' + key}, the registry gives {b[0] if b else 'none'}"
                )
            elif a[1] != b[1]:
                notes.append(f"the integrity of {a[0]} differs from the registry's")
    return "; ".join(sorted(notes)) or "differs in layout (rewrite it with `kubemill lock`)"
