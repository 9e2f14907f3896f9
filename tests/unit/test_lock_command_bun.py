"""`kubemill lock` and locked runs of Bun scripts on this machine: the real `bun install` resolves the imports
against the npm registry into Windmill's Bun lock (integrity hashes included); the runner installs exactly
the lock once (`--frozen-lockfile`, into a cache keyed by the lock), runs with auto-install off, and fails
clearly on an import the lock does not contain or a package whose integrity does not match."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from kubemill.cli import main
from kubemill.runners.lockfile import BUN_SPLIT, parse_bun_lock
from kubemill.runners.runtimes import find_interpreter

ODD = (
    'import isOdd from "npm:is-odd@3.0.1";\n\n'
    "export async function main(n: number = 3) {\n  return { odd: isOdd(n) };\n}\n"
)
NO_PACKAGES = (
    'import * as wmill from "windmill-client";\nimport type { Big } from "some-types-only";\n'
    'import { readFileSync } from "node:fs";\nimport path from "path";\n\n'
    "export async function main() {\n  return [typeof wmill.getState, typeof readFileSync, path.sep];\n}\n"
)
PADS = (
    'import leftPad from "left-pad";\nimport isOdd from "npm:is-odd@3.0.1";\n\n'
    "export function main() {\n  return leftPad(String(isOdd(3)), 6);\n}\n"
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBEMILL_BUN", find_interpreter("bun"))  # before the home that has no runtimes
    (tmp_path / "wmill.yaml").write_text("defaultTs: bun\n")
    (tmp_path / "f" / "demo").mkdir(parents=True)
    (tmp_path / "f" / "demo" / "odd.bun.ts").write_text(ODD)
    (tmp_path / "f" / "demo" / "plain.bun.ts").write_text(NO_PACKAGES)
    monkeypatch.setenv("KUBEMILL_HOME", str(tmp_path / "home"))  # a cold cache of its own
    monkeypatch.chdir(tmp_path)
    return tmp_path


def lock(*args: str) -> int:
    return main(["lock", "--workspace", ".", *args])


def run(target: str) -> int:
    return main(["run", target, "--workspace", "."])


def installs() -> list[Path]:
    return sorted((Path(os.environ["KUBEMILL_HOME"]) / "deps" / "bun").glob("lock-*"))


def test_lock_writes_windmills_bun_lock_with_integrity_and_is_idempotent(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    file = workspace / "f" / "demo" / "odd.script.lock"
    assert lock("--check", "f/demo/odd.bun.ts") == 1 and "missing" in capfd.readouterr().out
    assert lock() == 0
    text = file.read_text()
    package_json, bun_lock = text.split(BUN_SPLIT)
    assert json.loads(package_json) == {"dependencies": {"is-odd": "3.0.1"}}  # the pin in the import string
    packages = parse_bun_lock(text).packages()
    assert packages["is-odd"][0] == "is-odd@3.0.1" and packages["is-odd"][1].startswith("sha512-")
    assert packages["is-number"][1].startswith("sha512-")  # its dependency, hashed as well
    assert '"lockfileVersion"' in bun_lock
    # no packages: windmill-client is the runner's, node: and built-ins Bun's, a type-only import erased
    assert (workspace / "f/demo/plain.script.lock").read_text() == (
        '{\n  "dependencies": {}\n}\n//bun.lock\n<empty>'
    )
    assert lock() == 0 and file.read_text() == text
    assert all(line.startswith("unchanged") for line in capfd.readouterr().out.splitlines()[-2:])
    assert lock("--check") == 0


def test_a_locked_script_runs_from_the_lock_once_installed(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert lock() == 0
    capfd.readouterr()
    assert run("f/demo/odd") == 0
    first = capfd.readouterr()
    assert json.loads(first.out) == {"odd": True}
    assert "installing the lock's is-odd@3.0.1" in first.err
    assert run("f/demo/odd") == 0
    assert "installing" not in capfd.readouterr().err  # the second run installs nothing
    (install,) = installs()
    assert json.loads((install / "node_modules/is-odd/package.json").read_text())["version"] == "3.0.1"
    assert run("f/demo/plain") == 0  # a lock without packages (`<empty>`) installs nothing
    assert json.loads(capfd.readouterr().out) == ["function", "function", "/"]


def test_an_import_the_lock_does_not_contain_fails_naming_it_and_downloads_nothing(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert lock() == 0
    (workspace / "f/demo/odd.bun.ts").write_text(PADS)  # a new import, the lock left as it was
    capfd.readouterr()
    assert run("f/demo/odd") == 1
    err = capfd.readouterr().err
    assert (
        "kubemill run: DependencyError: main.ts imports left-pad, which the script's lock does not contain"
        " (it has is-odd@3.0.1)"
    ) in err
    assert not list(Path(os.environ["KUBEMILL_HOME"]).rglob("left-pad*"))  # no auto-install
    assert lock("--check") == 1
    assert "stale     f/demo/odd.script.lock: lacks left-pad@latest" in capfd.readouterr().out
    assert lock() == 0 and run("f/demo/odd") == 0
    assert json.loads(capfd.readouterr().out.splitlines()[-1]) == "  true"


def test_a_tampered_integrity_fails_the_install_and_the_check(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert lock() == 0
    file = workspace / "f/demo/odd.script.lock"
    integrity = parse_bun_lock(file.read_text()).packages()["is-odd"][1]
    file.write_text(file.read_text().replace(integrity, "sha512-" + "A" * 86 + "=="))
    capfd.readouterr()
    assert run("f/demo/odd") == 1
    err = capfd.readouterr().err
    assert (
        "kubemill run: DependencyError: installing the lock's is-odd@3.0.1 failed (bun install exit 1)" in err
    )
    assert "Integrity check failed for tarball: is-odd" in err
    assert installs() == []  # nothing left under the lock's key
    assert lock("--check") == 1
    assert "the integrity of is-odd@3.0.1 differs from the registry's" in capfd.readouterr().out


def test_a_bun_lock_that_does_not_parse_refuses_the_run(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (workspace / "f/demo/odd.script.lock").write_text('{"dependencies": {"is-odd": "3.0.1"}}\n')
    assert run("f/demo/odd") == 2
    assert (
        "the lock cannot be used: a Bun lock is package.json, the line `//bun.lock`" in capfd.readouterr().err
    )


def test_a_package_that_does_not_exist_is_named(workspace: Path, capfd: pytest.CaptureFixture[str]) -> None:
    missing = "kubemill-no-such-package-7f3a"
    (workspace / "f/demo/odd.bun.ts").write_text(
        f'import x from "{missing}";\nexport function main() {{ return x; }}\n'
    )
    assert lock("f/demo/odd.bun.ts") == 1
    err = capfd.readouterr().err
    assert f"kubemill lock: f/demo/odd: bun install failed (cannot resolve {missing}@latest)" in err
    assert not (workspace / "f/demo/odd.script.lock").exists()
