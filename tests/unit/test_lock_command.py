"""`kubemill lock` and locked runs on this machine: uv resolves from PyPI, the runner installs the lock
exactly (hash-checked) into a cache keyed by the lock; a stale, tampered or foreign lock fails clearly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from kubemill.cli import main
from kubemill.runners.lockfile import parse_python_lock

SCRIPT = (
    "import six\n\n\ndef main(x: str = 'a'):\n    return {'x': six.ensure_text(x), 'six': six.__version__}\n"
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "wmill.yaml").write_text("defaultTs: bun\n")
    (tmp_path / "f" / "demo").mkdir(parents=True)
    (tmp_path / "f" / "demo" / "six_user.py").write_text(SCRIPT)
    home = tmp_path / "home"
    monkeypatch.setenv("KUBEMILL_HOME", str(home))  # a cold cache of its own
    monkeypatch.chdir(tmp_path)
    return tmp_path


def lock(*args: str) -> int:
    return main(["lock", "--workspace", ".", *args])


def test_lock_pins_the_import_with_hashes_and_is_idempotent(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    file = workspace / "f" / "demo" / "six_user.script.lock"
    assert lock("--check") == 1 and "missing" in capfd.readouterr().out
    assert lock() == 0
    text = file.read_text()
    pins = parse_python_lock(text)
    assert [p.name for p in pins.pins] == ["six"] and pins.pins[0].hashes
    assert text.startswith("# py: 3.")
    assert lock() == 0 and file.read_text() == text
    assert "unchanged" in capfd.readouterr().out.splitlines()[-1]
    assert lock("--check") == 0


def test_a_locked_script_runs_from_the_lock_and_reuses_the_cache(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (workspace / "f" / "demo" / "six_user.script.lock").write_text("# py: 3.11\nsix==1.15.0\n")  # Windmill's
    assert main(["run", "f/demo/six_user", "--workspace", "."]) == 0
    first = capfd.readouterr()
    assert json.loads(first.out) == {"x": "a", "six": "1.15.0"}  # the pinned version, not the newest
    assert "installing the lock's six==1.15.0" in first.err
    assert main(["run", "f/demo/six_user", "--workspace", "."]) == 0
    assert "installing" not in capfd.readouterr().err  # the second run downloads nothing
    cached = list((Path(os.environ["KUBEMILL_HOME"]) / "deps" / "python").glob("py*/lock-*"))
    assert len(cached) == 1


def test_a_tampered_hash_fails_the_run_and_the_check(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert lock() == 0
    file = workspace / "f" / "demo" / "six_user.script.lock"
    good = file.read_text()
    hashes = parse_python_lock(good).pins[0].hashes
    tampered = good
    for h in hashes:
        tampered = tampered.replace(h, "sha256:" + "0" * 64)
    file.write_text(tampered)
    capfd.readouterr()
    assert main(["run", "f/demo/six_user", "--workspace", "."]) == 1
    err = capfd.readouterr().err
    assert "kubemill run: DependencyError: installing the lock's six==" in err
    assert "cause: Hash mismatch for `six==" in err.splitlines()[-1]
    assert lock("--check") == 1
    assert "the hashes of six==" in capfd.readouterr().out


def test_a_lock_naming_a_package_the_script_does_not_need_is_stale(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (workspace / "f" / "demo" / "six_user.script.lock").write_text("# py: 3.11\nsix==1.17.0\nidna==3.10\n")
    assert lock("--check") == 1
    out = capfd.readouterr().out
    assert "pins idna==3.10, which the script does not resolve to" in out
    assert lock() == 0  # rewritten from the script
    assert [
        p.name for p in parse_python_lock((workspace / "f/demo/six_user.script.lock").read_text()).pins
    ] == ["six"]


def test_an_unresolvable_package_is_named_with_the_script(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (workspace / "f" / "demo" / "broken.py").write_text(
        "# requirements:\n# kubemill-no-such-package-4242==1.0\n\ndef main():\n    return 1\n"
    )
    assert lock("f/demo/broken.py") == 1
    err = capfd.readouterr().err
    assert "f/demo/broken: uv pip compile failed (cannot resolve kubemill-no-such-package-4242==1.0)" in err
    assert not (workspace / "f" / "demo" / "broken.script.lock").exists()


def test_a_lock_that_does_not_parse_refuses_the_run(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (workspace / "f" / "demo" / "six_user.script.lock").write_text("six>=1\n")
    assert main(["run", "f/demo/six_user", "--workspace", "."]) == 2
    assert "the lock cannot be used: line 1: 'six>=1' is not a pinned requirement" in capfd.readouterr().err


def test_a_script_without_dependencies_gets_no_lock_and_flow_steps_are_left_to_flow_yaml(
    workspace: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (workspace / "f" / "demo" / "plain.py").write_text("import json\n\n\ndef main():\n    return 1\n")
    (workspace / "f" / "demo" / "steps.flow").mkdir()
    (workspace / "f" / "demo" / "steps.flow" / "a.inline_script.py").write_text(SCRIPT)
    assert lock() == 0
    assert not (workspace / "f" / "demo" / "plain.script.lock").exists()
    assert not list((workspace / "f" / "demo" / "steps.flow").glob("*.lock"))
    (workspace / "f" / "demo" / "plain.script.lock").write_text("# py: 3.11\nsix==1.17.0\n")
    assert lock("--check") == 1 and "the script needs no dependencies" in capfd.readouterr().out
    assert lock() == 0 and not (workspace / "f" / "demo" / "plain.script.lock").exists()  # as Windmill
