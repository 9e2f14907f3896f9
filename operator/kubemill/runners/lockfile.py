"""Windmill's `.script.lock` files, read and written: pure text in, data out (no uv, no bun, no files).

What `wmill script generate-metadata` writes beside `<name>.py` (and `wmill sync pull` brings down), and what
`kubemill lock` writes the same way, so a workspace round-trips between Windmill and kubemill:

- Python: `# py: 3.11`, then one pinned requirement a line (`six==1.17.0`), as Windmill's dependency job
  writes it from `uv pip compile`. kubemill adds one comment line per pin, `# hash: six==1.17.0 sha256:...`
  (every hash uv gave for it); Windmill skips comment lines, the runner turns them into `--hash` options
  and installs with `--require-hashes`.
- Bun: the generated `package.json` (`{"dependencies": {name: version or "latest"}}`, from the script's
  imports, as Windmill's builder writes it), the line `//bun.lock`, then the text `bun.lock` that
  `bun install` wrote for it (`<empty>` when there are no dependencies), as Windmill's Bun executor splits it.
  The runner installs it with `bun install --frozen-lockfile`, which checks every package's integrity.

A lock that is neither is refused with the line that does not fit (`LockError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LOCK_FILE = "script.lock"
"""The lock's file name beside the code in a run directory (`code/script.lock`, the runner reads it)."""
PYTHON_HEADER = "# py:"
HASH_COMMENT = "# hash:"
BUN_SPLIT = "\n//bun.lock\n"
BUN_EMPTY = "<empty>"
LOCKED_LANGUAGES = ("python3", "bun")
"""The languages whose lock kubemill writes and whose runner installs exactly it (docs/runners.md)."""

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_HASH = re.compile(r"^(sha256|sha384|sha512):[0-9a-f]+$")


class LockError(ValueError):
    """A lock that cannot be read: the message names the offending line."""


def lock_digest(text: str) -> str:
    """The key of an install made from this lock (the runner computes the same)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (`Foo_Bar` == `foo-bar`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, order=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class PythonLock:
    python: str | None
    pins: tuple[Pin, ...]

    def names(self) -> set[str]:
        return {normalize(p.name) for p in self.pins}


def parse_python_lock(text: str) -> PythonLock:
    """A Python `.script.lock`; LockError for a line that is not a pin, a comment or a known annotation."""
    python: str | None = None
    versions: dict[str, tuple[str, str]] = {}
    hashes: dict[str, tuple[str, ...]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(PYTHON_HEADER):
            python = line[len(PYTHON_HEADER) :].strip() or None
        elif line.startswith(HASH_COMMENT):
            words = line[len(HASH_COMMENT) :].split()
            found = _PIN.match(words[0]) if words else None
            bad = [w for w in words[1:] if not _HASH.match(w)]
            if found is None or bad or len(words) < 2:
                raise LockError(f"line {number}: {raw!r} is not `# hash: name==version sha256:<hex>...`")
            hashes[normalize(found[1]) + "==" + found[2]] = tuple(words[1:])
        elif line.startswith("#"):
            continue
        else:
            found = _PIN.match(line)
            if found is None:
                raise LockError(f"line {number}: {raw!r} is not a pinned requirement (`name==version`)")
            key = normalize(found[1])
            if key in versions:
                raise LockError(f"line {number}: {found[1]} is pinned twice")
            versions[key] = (found[1], found[2])
    pins = []
    for key, (name, version) in versions.items():
        pins.append(Pin(name, version, hashes.pop(f"{key}=={version}", ())))
    if hashes:
        raise LockError(f"hashes for {', '.join(sorted(hashes))}, which the lock does not pin")
    if any(p.hashes for p in pins) and not all(p.hashes for p in pins):
        missing = ", ".join(p.requirement for p in pins if not p.hashes)
        raise LockError(f"the lock has hashes, but none for {missing}")
    return PythonLock(python, tuple(sorted(pins, key=lambda p: normalize(p.name))))


def format_python_lock(lock: PythonLock) -> str:
    """The lock as Windmill writes it (`# py:` and the pins), then kubemill's hash lines."""
    lines = [f"{PYTHON_HEADER} {lock.python}"] if lock.python else []
    lines += [p.requirement for p in lock.pins]
    lines += [f"{HASH_COMMENT} {p.requirement} {' '.join(p.hashes)}" for p in lock.pins if p.hashes]
    return "\n".join(lines) + "\n"


def parse_uv_compile(output: str, python: str | None) -> PythonLock:
    """`uv pip compile --generate-hashes --no-header` output (`name==v \\`, `--hash=...` lines, `# via`
    comments) as a lock."""
    joined = re.sub(r"\\\n", " ", output)
    pins = []
    for line in joined.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        found = _PIN.match(words[0].split(";")[0])
        if found is None:
            raise LockError(f"uv wrote a line that is not a pin: {line.strip()!r}")
        hashes = tuple(w[len("--hash=") :] for w in words[1:] if w.startswith("--hash="))
        pins.append(Pin(found[1], found[2], hashes))
    return PythonLock(python, tuple(sorted(pins, key=lambda p: normalize(p.name))))


def as_requirements(lock: PythonLock) -> str:
    """The lock as a pip requirements file (pins with their `--hash` options), for uv's preferences."""
    return "".join(" ".join([p.requirement, *(f"--hash={h}" for h in p.hashes)]) + "\n" for p in lock.pins)


# --- Bun ---------------------------------------------------------------------------------------------------

# A Bun import: the package (`name` or `@scope/name`), a version pinned in the import string, the subpath.
_BUN_IMPORT = re.compile(r"^((?:@[^/@]+/[^/@]+)|(?:[^/@]+))(?:@([^/]+))?(.*)$")
_BUN_CLIENT = re.compile(r"^windmill-client(@[^/]*)?$")
_NPM_RESOLUTION = re.compile(r"^(@?[^@]+)@(\d[^:]*)$")  # `is-odd@3.0.1`: from the registry, by version
_INTEGRITY = re.compile(r"^sha(256|384|512)-[A-Za-z0-9+/]+=*$")
_ENTRY_INTEGRITY = re.compile(r',\s*"sha(?:256|384|512)-[A-Za-z0-9+/]+=*"\s*\]')
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


@dataclass(frozen=True)
class BunLock:
    package_json: str
    bun_lock: str | None  # None: no dependencies (`<empty>`)

    def dependencies(self) -> dict[str, str]:
        data = json.loads(self.package_json)
        deps = data.get("dependencies") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in deps.items()} if isinstance(deps, dict) else {}

    def packages(self) -> dict[str, tuple[str, str]]:
        """Every package bun.lock installs: its key to (resolution `name@version`, integrity or "")."""
        if self.bun_lock is None:
            return {}
        entries = _bun_lock_json(self.bun_lock, 0).get("packages") or {}
        return {
            str(k): (str(v[0]), str(v[-1]) if len(v) >= 4 and isinstance(v[-1], str) else "")
            for k, v in entries.items()
            if isinstance(v, list) and v
        }


def package_of(specifier: str) -> tuple[str, str | None, str] | None:
    """A Bun import's package, pinned version and subpath (`npm:is-odd@3.0.1/x` -> `is-odd`, `3.0.1`, `/x`);
    None for what is not a package: a relative or absolute path, a URL, `node:` and `bun:` modules, and
    kubemill's own `windmill-client` (the runner ships it)."""
    name = specifier.removeprefix("npm:")
    if not name or name.startswith((".", "/")) or ":" in name or name == "bun" or _BUN_CLIENT.match(name):
        return None
    found = _BUN_IMPORT.match(name)
    if found is None:
        return None
    return found[1], found[2], found[3]


def bun_dependencies(specifiers: Iterable[str]) -> dict[str, str]:
    """package.json's `dependencies` for a script's imports, as Windmill's builder derives them: each package
    at the version its import string pins (`npm:is-odd@3.0.1`), else `latest`. LockError for a package
    imported at two different versions."""
    pinned: dict[str, set[str]] = {}
    for specifier in specifiers:
        found = package_of(specifier)
        if found is not None:
            versions = pinned.setdefault(found[0], set())
            if found[1]:
                versions.add(found[1])
    deps = {}
    for name, versions in sorted(pinned.items()):
        if len(versions) > 1:
            raise LockError(f"{name} is imported at {len(versions)} versions: {', '.join(sorted(versions))}")
        deps[name] = next(iter(versions), "latest")
    return deps


def format_package_json(dependencies: dict[str, str]) -> str:
    """package.json as Windmill's builder writes it (`JSON.stringify(..., null, 2)`)."""
    return json.dumps({"dependencies": dependencies}, indent=2)


def _bun_lock_json(text: str, first_line: int) -> dict[str, Any]:
    """bun.lock (JSON with trailing commas) as data; LockError naming the line of the .script.lock."""
    try:
        data = json.loads(_TRAILING_COMMA.sub(r"\1", text))
    except ValueError as exc:
        line = getattr(exc, "lineno", 1) + first_line
        raise LockError(f"line {line}: the bun.lock part is not JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(data, dict):
        raise LockError(f"line {first_line + 1}: the bun.lock part is not an object")
    return data


def parse_bun_lock(text: str) -> BunLock:
    """A Bun `.script.lock`; LockError naming the line for a part that is not JSON, a package.json without
    an object of `dependencies`, a bun.lock that does not resolve them, or a registry package without an
    integrity hash (the frozen install checks every package against it)."""
    normalized = text.replace("\r\n", "\n")
    if BUN_SPLIT not in normalized:
        raise LockError("a Bun lock is package.json, the line `//bun.lock`, then bun.lock: no `//bun.lock`")
    package_json, bun_lock = normalized.split(BUN_SPLIT, 1)
    try:
        manifest = json.loads(package_json)
    except ValueError as exc:
        line = getattr(exc, "lineno", 1)
        raise LockError(
            f"line {line}: the package.json part is not JSON: {getattr(exc, 'msg', exc)}"
        ) from None
    deps = manifest.get("dependencies", {}) if isinstance(manifest, dict) else None
    if not isinstance(deps, dict) or not all(isinstance(v, str) for v in deps.values()):
        raise LockError("line 1: package.json's `dependencies` is not an object of package names to versions")
    lock = BunLock(package_json, None if bun_lock.strip() == BUN_EMPTY else bun_lock)
    split_line = package_json.count("\n") + 2  # the `//bun.lock` line
    if lock.bun_lock is None:
        if deps:
            raise LockError(
                f"line {split_line + 1}: bun.lock is {BUN_EMPTY}, but package.json names {', '.join(deps)}"
            )
        return lock
    data = _bun_lock_json(lock.bun_lock, split_line)
    workspace = (data.get("workspaces") or {}).get("") or {}
    resolved = workspace.get("dependencies") or {} if isinstance(workspace, dict) else {}
    if resolved != deps:
        raise LockError(
            f"line {split_line + 1}: bun.lock was made for the dependencies {json.dumps(resolved)}, "
            f"not package.json's {json.dumps(deps)}"
        )
    lines = lock.bun_lock.split("\n")
    for key, (resolution, integrity) in lock.packages().items():
        if _NPM_RESOLUTION.match(resolution) and not _INTEGRITY.match(integrity):
            at = next((n for n, t in enumerate(lines, start=1) if t.strip().startswith(f'"{key}": [')), 1)
            raise LockError(f"line {split_line + at}: bun.lock's {resolution} has no integrity hash")
    return lock


def without_integrity(bun_lock: str) -> str:
    """bun.lock with its packages' integrity hashes dropped: `bun install` keeps the versions and asks the
    registry for the hashes again (as uv is given a previous lock's pins without their hashes)."""
    return _ENTRY_INTEGRITY.sub("]", bun_lock)


def format_bun_lock(lock: BunLock) -> str:
    return lock.package_json + BUN_SPLIT + (lock.bun_lock if lock.bun_lock is not None else BUN_EMPTY)


def check_lock(language: str, text: str) -> None:
    """LockError unless `text` is a lock kubemill's runner for `language` installs."""
    if language == "python3":
        parse_python_lock(text)
    elif language == "bun":
        parse_bun_lock(text)
    else:
        raise LockError(f"a lock is for {' or '.join(LOCKED_LANGUAGES)} scripts, not {language}")
