"""Windmill's `.script.lock` files, read and written: pure text in, data out (no uv, no bun, no files).

What `wmill script generate-metadata` writes beside `<name>.py` (and `wmill sync pull` brings down), and what
`kubemill lock` writes the same way, so a workspace round-trips between Windmill and kubemill:

- Python: `# py: 3.11`, then one pinned requirement a line (`six==1.17.0`), as Windmill's dependency job
  writes it from `uv pip compile`. kubemill adds one comment line per pin, `# hash: six==1.17.0 sha256:...`
  (every hash uv gave for it); Windmill skips comment lines, the runner turns them into `--hash` options
  and installs with `--require-hashes`.
- Bun: the generated `package.json`, the line `//bun.lock`, then the `bun.lock` text (`<empty>` when there
  are no dependencies), as Windmill's Bun executor splits it.

A lock that is neither is refused with the line that does not fit (`LockError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

LOCK_FILE = "script.lock"
"""The lock's file name beside the code in a run directory (`code/script.lock`, the runner reads it)."""
PYTHON_HEADER = "# py:"
HASH_COMMENT = "# hash:"
BUN_SPLIT = "\n//bun.lock\n"
BUN_EMPTY = "<empty>"
LOCKED_LANGUAGES = ("python3",)
"""The languages whose lock kubemill writes and whose runner installs exactly it (Bun locks are read, to
report them, but the Bun runner still resolves a script's imports itself: docs/runners.md)."""

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


@dataclass(frozen=True)
class BunLock:
    package_json: str
    bun_lock: str | None  # None: no dependencies (`<empty>`)

    def dependencies(self) -> dict[str, str]:
        data = json.loads(self.package_json)
        deps = data.get("dependencies") if isinstance(data, dict) else None
        return {str(k): str(v) for k, v in deps.items()} if isinstance(deps, dict) else {}


def parse_bun_lock(text: str) -> BunLock:
    normalized = text.replace("\r\n", "\n")
    if BUN_SPLIT not in normalized:
        raise LockError("a Bun lock is package.json, the line `//bun.lock`, then bun.lock: no `//bun.lock`")
    package_json, bun_lock = normalized.split(BUN_SPLIT, 1)
    try:
        json.loads(package_json)
    except ValueError as exc:
        raise LockError(f"the package.json part is not JSON: {exc}") from None
    return BunLock(package_json, None if bun_lock.strip() == BUN_EMPTY else bun_lock)


def format_bun_lock(lock: BunLock) -> str:
    return lock.package_json + BUN_SPLIT + (lock.bun_lock if lock.bun_lock is not None else BUN_EMPTY)


def check_lock(language: str, text: str) -> None:
    """LockError unless `text` is a lock kubemill's runner for `language` installs."""
    if language == "python3":
        parse_python_lock(text)
    else:
        raise LockError(f"a lock is for {' or '.join(LOCKED_LANGUAGES)} scripts, not {language}")
