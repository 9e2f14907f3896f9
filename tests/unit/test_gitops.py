"""`kubemill sync`: a Windmill-layout workspace becomes valid, deterministic manifests and a kustomization."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubemill.gitops import add_arguments_sync, cli_sync, sync_workspace
from kubemill.gitops.output import MAX_NAME, object_name, render, write_output
from kubemill.models.kinds import parse_manifest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "windmill"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def by_path(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["annotations"]["kubemill.dev/source"]: m for m in manifests if m["kind"] == kind}


def sync(root: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    add_arguments_sync(parser)
    return cli_sync(parser.parse_args([str(root), *extra]))


HELLO = {"f/demo/hello.py": "def main(name: str = 'world'):\n    return f'hello {name}'\n"}


def test_the_example_workspace_becomes_every_kind_with_no_errors() -> None:
    result = sync_workspace(EXAMPLE)
    assert result.errors == []
    kinds = [m["kind"] for m in result.manifests]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "ResourceType": 1,
        "Variable": 2,
        "Resource": 2,
        "Script": 6,
        "Flow": 2,
        "Schedule": 2,
    }
    for manifest in result.manifests:
        parse_manifest(manifest)  # what the operator and the CRDs accept
        assert "ownerReferences" not in manifest["metadata"]
    scripts = {m["spec"]["path"]: m["spec"] for m in result.manifests if m["kind"] == "Script"}
    assert scripts["f/inventory/check_availability"]["language"] == "deno"  # wmill.yaml defaultTs
    assert scripts["f/inventory/check_availability"]["resources"] == [
        "u/admin/api_key",
        "u/admin/inventory_api",
    ]
    assert scripts["f/payments/process_payment"]["timeoutSeconds"] == 60
    assert scripts["f/demo/hello"]["content"] == (EXAMPLE / "f/demo/hello.py").read_text()
    assert sorted(result.notes) == [
        "f/demo/hello.http_trigger.yaml: skipped, not a kind kubemill has",
        "f/order_processing/folder.meta.yaml: skipped, not a kind kubemill has",
        "f/order_processing/nightly_replay.schedule.yaml: retry left out: Windmill ignores a schedule's "
        "retry for a flow; set retry on the flow's steps",
    ]


def test_rerunning_on_an_unchanged_workspace_writes_identical_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert sync(EXAMPLE, "-o", str(first)) == 0
    assert sync(EXAMPLE, "-o", str(second)) == 0
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    before = {f: (first / f).stat().st_mtime_ns for f in files}
    assert sync(EXAMPLE, "-o", str(first)) == 0
    assert {f: (first / f).stat().st_mtime_ns for f in files} == before  # nothing rewritten


def test_kustomization_lists_every_file_and_sets_the_namespace(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert sync(EXAMPLE, "-o", str(out), "--namespace", "orders") == 0
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "orders"
    listed = kustomization["resources"]
    on_disk = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert sorted(listed) == on_disk
    assert listed[0].startswith("resourcetypes/") and listed[-1].startswith("schedules/")
    kinds = {yaml.safe_load((out / f).read_text())["kind"] for f in listed}
    assert not kinds & {"ScriptRun", "FlowRun"}
    assert "u.admin.api_key" in (out / "kustomization.yaml").read_text()  # the Secret keys to provide


def test_deleted_definitions_disappear_and_foreign_files_stay(tmp_path: Path) -> None:
    ws = write(tmp_path / "ws", {**HELLO, "f/demo/bye.sh": 'name="$1"\necho "bye $name"\n'})
    out = tmp_path / "out"
    assert sync(ws, "-o", str(out)) == 0
    (out / "README.yaml").write_text("# mine\n")
    assert (out / "scripts/f-demo-bye.yaml").is_file()
    (ws / "f/demo/bye.sh").unlink()
    assert sync(ws, "-o", str(out)) == 0
    assert not (out / "scripts/f-demo-bye.yaml").exists()
    assert (out / "README.yaml").read_text() == "# mine\n"
    assert yaml.safe_load((out / "kustomization.yaml").read_text())["resources"] == [
        "scripts/f-demo-hello.yaml"
    ]


def test_stdout_is_one_yaml_stream_of_the_same_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    assert sync(EXAMPLE) == 0
    streamed = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert streamed == sync_workspace(EXAMPLE).manifests


def test_flow_inline_scripts_are_read_from_the_flow_folder_in_both_layouts(tmp_path: Path) -> None:
    flow = """
        summary: two steps
        value:
          modules:
            - id: a
              value: {type: rawscript, language: python3, content: '!inline a.inline_script.py'}
            - id: loop
              value:
                type: forloopflow
                iterator: {type: javascript, expr: '[1, 2]'}
                modules:
                  - id: b
                    value: {type: rawscript, language: bash, content: '!inline b.inline_script.sh'}
        """
    ws = write(
        tmp_path,
        {
            "f/x/dotted.flow/flow.yaml": flow,
            "f/x/dotted.flow/a.inline_script.py": "def main():\n    return 1\n",
            "f/x/dotted.flow/b.inline_script.sh": "echo 2\n",
            "f/x/dunder__flow/flow.yaml": flow,
            "f/x/dunder__flow/a.inline_script.py": "def main():\n    return 1\n",
            "f/x/dunder__flow/b.inline_script.sh": "echo 2\n",
        },
    )
    result = sync_workspace(ws)
    assert result.errors == []
    flows = {m["spec"]["path"]: m["spec"] for m in result.manifests if m["kind"] == "Flow"}
    assert sorted(flows) == ["f/x/dotted", "f/x/dunder"]
    for spec in flows.values():
        modules = spec["value"]["modules"]
        assert modules[0]["value"]["content"] == "def main():\n    return 1\n"
        assert modules[1]["value"]["modules"][0]["value"]["content"] == "echo 2\n"
    assert by_path(result.manifests, "Script") == {}  # inline steps are not Scripts


def test_a_missing_inline_file_names_the_flow_and_step(tmp_path: Path) -> None:
    ws = write(
        tmp_path,
        {
            "f/x/f.flow/flow.yaml": """
                value:
                  modules:
                    - id: a
                      value: {type: rawscript, language: python3, content: '!inline gone.py'}
                """
        },
    )
    (error,) = sync_workspace(ws).errors
    assert error.startswith("f/x/f.flow/flow.yaml: step 'a': '!inline gone.py' names no file")


def test_schedules_map_windmill_fields(tmp_path: Path) -> None:
    ws = write(
        tmp_path,
        {
            "f/s/flow.schedule.yaml": """
                schedule: 0 0 12 * * MON-FRI
                timezone: Europe/Paris
                script_path: f/s/report
                is_flow: true
                args: {days: 1}
                enabled: false
                no_flow_overlap: true
                paused_until: '2030-01-01T00:00:00Z'
                on_failure: flow/f/s/page_oncall
                on_failure_times: 2
                on_recovery: f/s/all_clear
                on_success: script/f/s/log_ok
                on_success_extra_args: {level: info}
                dynamic_skip: f/s/skip_holidays
                """,
        },
    )
    result = sync_workspace(ws)
    assert result.errors == []
    (schedule,) = result.manifests
    assert schedule["metadata"]["name"] == "f-s-flow"
    assert schedule["spec"] == {
        "schedule": "0 0 12 * * MON-FRI",
        "timezone": "Europe/Paris",
        "flowPath": "f/s/report",
        "args": {"days": 1},
        "enabled": False,
        "pausedUntil": "2030-01-01T00:00:00Z",
        "noOverlap": True,
        "onFailure": {"flowPath": "f/s/page_oncall"},
        "onFailureTimes": 2,
        "onRecovery": {"scriptPath": "f/s/all_clear"},
        "onSuccess": {"scriptPath": "f/s/log_ok", "args": {"level": "info"}},
    }
    assert result.notes == ["f/s/flow.schedule.yaml: kubemill ignores dynamic_skip"]


def test_a_flows_schedule_leaves_its_retry_out_as_windmill_ignores_it(tmp_path: Path) -> None:
    retry = "retry: {constant: {attempts: 2, seconds: 60}}"
    ws = write(
        tmp_path,
        {
            "f/s/flow.schedule.yaml": f"schedule: 0 2 * * *\nscript_path: f/s/flow\nis_flow: true\n{retry}",
            "f/s/script.schedule.yaml": f"schedule: 0 2 * * *\nscript_path: f/s/job\n{retry}",
        },
    )
    result = sync_workspace(ws)
    assert result.errors == []
    specs = {m["metadata"]["name"]: m["spec"] for m in result.manifests}
    assert "retry" not in specs["f-s-flow"]
    assert specs["f-s-script"]["retry"] == {"constant": {"attempts": 2, "seconds": 60}}
    assert result.notes == [
        "f/s/flow.schedule.yaml: retry left out: Windmill ignores a schedule's retry for a flow; "
        "set retry on the flow's steps"
    ]
    for manifest in result.manifests:  # what sync writes, the models (and so the API server) accept
        parse_manifest(manifest)


def test_secret_values_never_reach_the_output(tmp_path: Path) -> None:
    ws = write(
        tmp_path,
        {
            "db.resource-type.yaml": """
                schema:
                  type: object
                  properties:
                    host: {type: string}
                    password: {type: string, password: true}
                    token: {type: string, password: true}
                """,
            "f/d/key.variable.yaml": "value: hunter2-variable\nis_secret: true\n",
            "f/d/db.resource.yaml": """
                resource_type: db
                value: {host: db.local, password: hunter2-field, token: '$var:f/d/key'}
                """,
            "f/d/use.py": "import wmill\n\ndef main():\n    return wmill.get_resource('f/d/db')\n",
        },
    )
    result = sync_workspace(ws)
    assert result.errors == []
    text = "".join(render(result).values())
    assert "hunter2" not in text
    resource = by_path(result.manifests, "Resource")["f/d/db.resource.yaml"]["spec"]
    assert resource["value"] == {"host": "db.local", "token": "$var:f/d/key"}  # a reference is not a secret
    assert resource["valueFrom"] == {
        "password": {"secretKeyRef": {"name": "kubemill-secrets", "key": "f.d.db.password"}}
    }
    variable = by_path(result.manifests, "Variable")["f/d/key.variable.yaml"]["spec"]
    assert variable["valueFrom"] == {"secretKeyRef": {"name": "kubemill-secrets", "key": "f.d.key"}}
    assert result.secret_keys == {"f.d.key", "f.d.db.password"}
    script = by_path(result.manifests, "Script")["f/d/use.py"]["spec"]
    assert script["resources"] == ["f/d/db", "f/d/key"]  # the resource, and the variable it interpolates


def test_languages_follow_windmill_extensions_and_default_ts(tmp_path: Path) -> None:
    files = {
        "wmill.yaml": "defaultTs: bun\n",
        "f/l/plain.ts": "export function main() { return 1 }\n",
        "f/l/d.deno.ts": "export function main() { return 1 }\n",
        "f/l/b.bun.ts": "export function main() { return 1 }\n",
        "f/l/g.go": "package inner\n\nfunc main() (interface{}, error) { return 1, nil }\n",
        "f/l/s.sh": "echo 1\n",
        "f/l/q.pg.sql": "select 1\n",
        "f/l/n.fetch.ts": "export function main() { return 1 }\n",
    }
    result = sync_workspace(write(tmp_path, files))
    languages = {m["spec"]["path"]: m["spec"]["language"] for m in result.manifests}
    assert languages == {"f/l/plain": "bun", "f/l/d": "deno", "f/l/b": "bun", "f/l/g": "go", "f/l/s": "bash"}
    assert sorted(result.notes) == [
        "f/l/n.fetch.ts: skipped, kubemill runs Python, TypeScript, Go and Bash",
        "f/l/q.pg.sql: skipped, kubemill runs Python, TypeScript, Go and Bash",
    ]
    overridden = {
        m["spec"]["path"]: m["spec"]["language"]
        for m in sync_workspace(tmp_path, default_ts="deno").manifests
    }
    assert overridden["f/l/plain"] == "deno"


def test_script_metadata_maps_to_the_spec(tmp_path: Path) -> None:
    ws = write(
        tmp_path,
        {
            **HELLO,
            "f/demo/hello.script.yaml": """
                summary: Say hello
                description: a greeting
                lock: '!inline f/demo/hello.script.lock'
                schema: {type: object, properties: {name: {type: string}}, required: []}
                timeout: 30
                concurrent_limit: 2
                kind: script
                """,
            "f/demo/hello.script.lock": "# py311\nrequests==2.32.3\n\nidna==3.7\n",
        },
    )
    (script,) = sync_workspace(ws).manifests
    spec = script["spec"]
    assert spec["summary"] == "Say hello" and spec["description"] == "a greeting"
    assert spec["lock"] == "# py311\nrequests==2.32.3\n\nidna==3.7\n" and "requirements" not in spec
    assert spec["schema"]["properties"] == {"name": {"type": "string"}}
    assert (spec["timeoutSeconds"], spec["concurrencyLimit"]) == (30, 2)


def test_a_bun_lock_is_carried_into_the_spec_and_a_broken_or_deno_one_is_not(tmp_path: Path) -> None:
    from tests.unit.test_lockfile import BUN_SCRIPT_LOCK

    code = 'import isOdd from "npm:is-odd@3.0.1";\nexport function main() {\n  return isOdd(1);\n}\n'
    ws = write(
        tmp_path,
        {
            "wmill.yaml": "defaultTs: bun\n",
            "f/ts/odd.ts": code,  # `wmill sync pull`'s name for a Bun script in a defaultTs: bun workspace
            "f/ts/odd.script.lock": BUN_SCRIPT_LOCK,
            "f/ts/broken.ts": code,
            "f/ts/broken.script.lock": BUN_SCRIPT_LOCK.replace(
                '"lockfileVersion": 1,', '"lockfileVersion": 1'
            ),
            "f/ts/old.deno.ts": code,
            "f/ts/old.script.lock": BUN_SCRIPT_LOCK,
        },
    )
    result = sync_workspace(ws)
    specs = {m["spec"]["path"]: m["spec"] for m in result.manifests}
    assert specs["f/ts/odd"]["language"] == "bun" and specs["f/ts/odd"]["lock"] == BUN_SCRIPT_LOCK
    assert "f/ts/broken" not in specs
    assert any(
        e.startswith("f/ts/broken.ts: ") and "its lock: line 9: the bun.lock part" in e for e in result.errors
    )
    assert "lock" not in specs["f/ts/old"]
    assert any("f/ts/old.deno.ts: its deno lock is not used" in n for n in result.notes), result.notes


def test_names_are_dns_labels_and_colliding_paths_stay_distinct(tmp_path: Path) -> None:
    long = "f/" + "very_long_folder_name/" * 4 + "script"
    ws = write(tmp_path, {"f/a/b_c.sh": "echo 1\n", "f/a/b-c.sh": "echo 2\n", f"{long}.sh": "echo 3\n"})
    names = sorted(m["metadata"]["name"] for m in sync_workspace(ws).manifests)
    assert len(set(names)) == 3
    assert all(len(n) <= MAX_NAME and n == object_name(n) for n in names)
    assert [n.rsplit("-", 1)[0] for n in names[:2]] == ["f-a-b-c", "f-a-b-c"]
    assert object_name("f/Order_Processing/x") == "f-order-processing-x"


def test_an_invalid_file_fails_the_whole_sync_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = write(
        tmp_path / "ws",
        {**HELLO, "f/demo/bad.schedule.yaml": "schedule: every day\nscript_path: f/demo/hello\n"},
    )
    out = tmp_path / "out"
    assert sync(ws, "-o", str(out)) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "error: f/demo/bad.schedule.yaml: spec.schedule: 'every day' must be a cron expression" in err
    assert "nothing written" in err


def test_a_missing_workspace_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sync(tmp_path / "nope") == 2
    assert "is not a directory" in capsys.readouterr().err


def test_the_output_folder_inside_the_workspace_is_not_read_back(tmp_path: Path) -> None:
    ws = write(tmp_path, HELLO)
    assert sync(ws, "-o", str(ws / "deploy")) == 0
    assert sync(ws, "-o", str(ws / "deploy")) == 0
    assert yaml.safe_load((ws / "deploy/kustomization.yaml").read_text())["resources"] == [
        "scripts/f-demo-hello.yaml"
    ]


def test_write_output_reports_what_it_removed(tmp_path: Path) -> None:
    result = sync_workspace(write(tmp_path / "ws", HELLO))
    files = render(result)
    assert write_output(tmp_path / "out", files) == []
    assert write_output(tmp_path / "out", {"kustomization.yaml": files["kustomization.yaml"]}) == [
        "scripts/f-demo-hello.yaml"
    ]
    assert not (tmp_path / "out/scripts").exists()  # empty folders go too


def test_the_committed_gitops_example_is_the_current_sync_output() -> None:
    deploy = REPO / "examples" / "gitops" / "deploy"
    expected = render(sync_workspace(EXAMPLE), namespace="demo")
    on_disk = {p.relative_to(deploy).as_posix(): p.read_text() for p in deploy.rglob("*") if p.is_file()}
    assert on_disk == expected, (
        "re-run: kubemill sync examples/windmill -o examples/gitops/deploy --namespace demo"
    )


def test_the_json_layout_reads_like_the_yaml_one(tmp_path: Path) -> None:
    ws = write(
        tmp_path,
        {
            "f/j/run.py": "def main():\n    return 1\n",
            "f/j/run.script.json": '{"summary": "from json", "schema": {"type": "object"}}',
            "f/j/v.variable.json": '{"value": "1", "is_secret": false}',
            "f/j/every.schedule.json": '{"schedule": "0 * * * *", "script_path": "f/j/run"}',
            "f/j/f.flow/flow.json": '{"value": {"modules": [{"id": "a", "value": {"type": "identity"}}]}}',
        },
    )
    result = sync_workspace(ws)
    assert result.errors == []
    specs = {m["kind"]: m["spec"] for m in result.manifests}
    assert specs["Script"]["summary"] == "from json"
    assert specs["Variable"] == {"path": "f/j/v", "value": "1"}
    assert specs["Schedule"]["scriptPath"] == "f/j/run"
    assert specs["Flow"]["path"] == "f/j/f"


@pytest.mark.parametrize("ref", ["../../../outside.py", "/etc/hostname", "../g.flow/../../../outside.py"])
def test_an_inline_file_outside_the_flow_folder_is_refused(tmp_path: Path, ref: str) -> None:
    (tmp_path / "outside.py").write_text("SECRET = 'from outside the workspace'\n")
    ws = write(
        tmp_path / "ws",
        {
            "f/x/f.flow/flow.yaml": f"""
                value:
                  modules:
                    - id: a
                      value: {{type: rawscript, language: python3, content: '!inline {ref}'}}
                """
        },
    )
    result = sync_workspace(ws)
    (error,) = result.errors
    assert error.startswith("f/x/f.flow/flow.yaml: step 'a': ") and "outside" in error, error
    assert "from outside the workspace" not in repr(result.manifests)


def test_a_symlink_out_of_the_workspace_is_refused_and_not_read(tmp_path: Path) -> None:
    (tmp_path / "secret.py").write_text("def main():\n    return 'host secret'\n")
    ws = write(tmp_path / "ws", {"f/x/ok.py": "def main():\n    return 1\n"})
    (ws / "f/x/leak.py").symlink_to(tmp_path / "secret.py")
    (ws / "f/x/lock.script.yaml").write_text("lock: '!inline ../../../secret.py'\n")
    (ws / "f/x/lock.py").write_text("def main():\n    return 2\n")
    result = sync_workspace(ws)
    assert any(e.startswith("f/x/leak.py: ") and "outside" in e for e in result.errors), result.errors
    assert any(e.startswith("f/x/lock.py: ") and "outside" in e for e in result.errors), result.errors
    assert "host secret" not in repr(result.manifests)
    assert "f/x/ok.py" in by_path(result.manifests, "Script")


def test_kubemill_run_refuses_an_inline_file_outside_the_flow_folder(tmp_path: Path) -> None:
    from kubemill.local.flows import inline_files
    from kubemill.local.scripts import InvalidRun

    (tmp_path / "outside.py").write_text("x")
    folder = tmp_path / "f.flow"
    folder.mkdir()
    with pytest.raises(InvalidRun, match="points outside"):
        inline_files({"content": "!inline ../outside.py"}, folder)
