"""The files a run reads: its code, `args.json` and one file per resource or variable.

`build_run_files` is pure (contents in, a mapping of relative paths to bytes out) so the operator can turn the
same mapping into a ConfigMap (code) and a Secret (resources) and `kubemill run` can write it to a directory.
Resource and variable files are named by `resource_filename`: `resource.` or `variable.` followed by the
Windmill path with each `/` written as `.` (`u/admin/db` -> `resource.u.admin.db`), which is a valid Secret
key because path segments may only hold letters, digits, `_` and `-`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kubemill.runners.languages import code_filename
from kubemill.runners.lockfile import LOCK_FILE

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class ResourcePathError(ValueError):
    """A resource or variable path that cannot be encoded as a file (and Secret key) name."""


def resource_filename(kind: Literal["resource", "variable"], path: str) -> str:
    segments = path.strip("/").split("/")
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ResourcePathError(
            f"{kind} path {path!r} must be segments of letters, digits, '_' and '-' separated by '/'"
        )
    return f"{kind}.{'.'.join(segments)}"


def resource_files(resources: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    """File name -> content for a run's resources (JSON) and variables (text): the Secret's data."""
    files = {resource_filename("resource", p): json.dumps(v) for p, v in resources.items()}
    files |= {resource_filename("variable", p): v for p, v in variables.items()}
    return files


@dataclass(frozen=True)
class RunFiles:
    """Relative path -> content; `code/`, `args.json` and `resources/` as the runner expects them."""

    files: Mapping[str, bytes] = field(default_factory=dict)


def build_run_files(
    language: str,
    code: str,
    args: Mapping[str, Any],
    resources: Mapping[str, Any] | None = None,
    variables: Mapping[str, str] | None = None,
    lock: str | None = None,
) -> RunFiles:
    files = {
        f"code/{code_filename(language)}": code.encode(),
        "args.json": json.dumps(dict(args)).encode(),
    }
    if lock is not None:  # the pinned dependencies, where the code ConfigMap puts them in a pod
        files[f"code/{LOCK_FILE}"] = lock.encode()
    for name, content in resource_files(resources or {}, variables or {}).items():
        files[f"resources/{name}"] = content.encode()
    return RunFiles(files)


def write_run_files(root: Path, run: RunFiles) -> None:
    """Write the files under `root`, with the output directory the runner writes its envelope to."""
    for relative, content in run.files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    (root / "out").mkdir(parents=True, exist_ok=True)
