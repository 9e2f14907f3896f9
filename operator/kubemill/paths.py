"""Files named by a workspace's own documents, kept inside the workspace.

A `flow.yaml` or `script.yaml` names other files (`!inline a.inline_script.py`, `lock: !inline ...`).
Those documents come from git, written by anyone who may push; `kubemill sync` and `kubemill run` must not
read `/etc/shadow` or `../../other-team/secrets.env` because one said so. `confined` resolves the name
(symlinks included) and refuses one that leaves its base folder.
"""

from __future__ import annotations

from pathlib import Path


class OutsideWorkspace(ValueError):
    """A document names a file outside the folder it may read from."""


def confined(base: Path, name: str) -> Path:
    """`base / name` if that file (symlinks followed) lies inside `base`; else OutsideWorkspace."""
    if not name or Path(name).is_absolute():
        raise OutsideWorkspace(f"{name!r} is not a path relative to {base}")
    root = base.resolve()
    target = (root / name).resolve()
    if not target.is_relative_to(root):
        raise OutsideWorkspace(f"{name!r} points outside {base} (to {target}); only files inside it are read")
    return target
