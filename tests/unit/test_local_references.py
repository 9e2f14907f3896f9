"""`$res:<path>` and `$var:<path>` in the args of `kubemill run`: resolved from the local workspace, as the
operator resolves them on a cluster (docs/resources.md), and refused naming the arg when nothing matches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kubemill.local.scripts import InvalidRun, run_script
from kubemill.secrets import UnresolvedReference, substitute_references

CODE = "def main(db: dict, token: str, n: int = 1):\n    return [db['host'], token, n]\n"
RESOURCES = {"u/admin/db": {"host": "db.internal", "password": "s3cret"}}
VARIABLES = {"u/admin/token": "tok-123"}


def test_references_at_any_depth_are_replaced_and_other_values_kept() -> None:
    args = {"db": "$res:u/admin/db", "nested": {"list": ["$var:u/admin/token", "plain"]}, "n": 3}
    out = substitute_references(args, RESOURCES, VARIABLES)
    assert out == {"db": RESOURCES["u/admin/db"], "nested": {"list": ["tok-123", "plain"]}, "n": 3}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"db": "$res:u/admin/nowhere"}, "arg 'db' names resource 'u/admin/nowhere'"),
        ({"x": {"y": ["$var:u/admin/gone"]}}, "arg 'x.y[0]' names variable 'u/admin/gone'"),
    ],
)
def test_a_reference_to_nothing_names_the_arg_and_the_path(args: dict[str, object], named: str) -> None:
    with pytest.raises(UnresolvedReference, match="which this workspace does not have") as caught:
        substitute_references(args, RESOURCES, VARIABLES)
    assert named in caught.value.message and caught.value.reason == "ResourceNotFound"


def test_a_script_run_gets_the_resolved_values_not_the_reference_strings() -> None:
    envelope = run_script(
        "python3",
        CODE,
        {"db": "$res:u/admin/db", "token": "$var:u/admin/token"},
        resources=RESOURCES,
        variables=VARIABLES,
    )
    assert envelope.error is None and envelope.result == ["db.internal", "tok-123", 1]


def test_a_script_run_naming_a_missing_resource_starts_nothing() -> None:
    with pytest.raises(InvalidRun, match="ResourceNotFound: arg 'db' names resource 'u/admin/other'"):
        run_script("python3", CODE, {"db": "$res:u/admin/other", "token": "t"}, resources=RESOURCES)


def test_kubemill_run_resolves_a_workspace_resource_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "wmill.yaml").write_text("defaultTs: bun\n", encoding="utf-8")
    (tmp_path / "f" / "t").mkdir(parents=True)
    (tmp_path / "f" / "t" / "use_db.py").write_text(CODE, encoding="utf-8")
    (tmp_path / "u" / "admin").mkdir(parents=True)
    resource = "value:\n  host: db.internal\nresource_type: postgresql\n"
    (tmp_path / "u" / "admin" / "db.resource.yaml").write_text(resource, encoding="utf-8")
    (tmp_path / "u" / "admin" / "token.variable.yaml").write_text("value: tok-9\nis_secret: false\n")
    cli = [sys.executable, "-m", "kubemill.cli", "run", "f/t/use_db", "--workspace", str(tmp_path)]
    refs = json.dumps({"db": "$res:u/admin/db", "token": "$var:u/admin/token"})
    done = subprocess.run([*cli, "--input", refs], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["db.internal", "tok-9", 1]
