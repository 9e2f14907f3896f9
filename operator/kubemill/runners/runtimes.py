"""Where this machine's interpreters and runner wrappers are, for runs outside a cluster.

A pod finds `python3`, `deno`, `bun`, `go` and `bash` on its image's PATH; here they come from PATH, from this
Python environment (the `deno` and `uv` PyPI packages ship binaries) or from the cache that
scripts/install-runtimes fills (~/.cache/kubemill/runtimes). `local_command` swaps the image paths of
`command_for` for those.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from pathlib import Path

from kubemill.runners.languages import RUNNER_DIR, canonical_language, command_for

_INTERPRETERS = {"python3": "python3", "bash": "bash", "deno": "deno", "bun": "bun", "go": "go"}


def cache_root() -> Path:
    return Path(os.environ.get("KUBEMILL_HOME") or Path.home() / ".cache" / "kubemill")


def runner_images_dir() -> Path:
    """runner_images/ of this checkout (or $KUBEMILL_RUNNER_IMAGES)."""
    configured = os.environ.get("KUBEMILL_RUNNER_IMAGES")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "runner_images"


class RuntimeMissing(RuntimeError):
    """No interpreter for a language on this machine."""


def find_interpreter(language: str) -> str:
    language = canonical_language(language)
    name = _INTERPRETERS[language]
    override = os.environ.get(f"KUBEMILL_{language.upper()}")
    if override:
        return override
    if language == "deno":
        try:
            import deno  # type: ignore[import-untyped]

            return str(deno.find_deno_bin())
        except (ImportError, FileNotFoundError):
            pass
    if language == "bun":
        cached = cache_root() / "runtimes" / "bun" / "node_modules" / ".bin" / "bun"
        if cached.exists():
            return str(cached)
    found = shutil.which(name)
    if language == "python3" and found and "/shims/" in found:
        # A pyenv shim is a shell script that costs ~90 ms a start: use the Python this one is based on.
        found = getattr(sys, "_base_executable", None) or sys.executable
    if found is None:
        raise RuntimeMissing(f"no {name} interpreter for {language} scripts: run scripts/install-runtimes")
    return found


@functools.cache
def find_uv() -> str | None:
    try:
        import uv

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def local_command(language: str, *, locked: bool = False) -> list[str]:
    """`command_for(language)` with this machine's interpreter and this checkout's runner directory."""
    language = canonical_language(language)
    runner = str(runner_images_dir() / language)
    command = [part.replace(RUNNER_DIR, runner) for part in command_for(language, locked=locked)]
    interpreter = find_interpreter(language)
    if command[0] == _INTERPRETERS[language]:
        command[0] = interpreter
    else:  # a launcher (Go's run.sh under bash) that finds the interpreter itself
        command[0] = shutil.which(command[0]) or command[0]
    return command
