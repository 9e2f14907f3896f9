"""Windmill `.script.lock` files: reading, writing, and what a tampered or foreign lock is refused with."""

from __future__ import annotations

import pytest
from kubemill.k8s.builders import RunTarget, build_code_configmap, content_hash
from kubemill.models.scripts import LOCKED, InlineScript, ScriptSpec
from kubemill.runners.lockfile import (
    LOCK_FILE,
    LOCKED_LANGUAGES,
    BunLock,
    LockError,
    Pin,
    PythonLock,
    as_requirements,
    bun_dependencies,
    check_lock,
    format_bun_lock,
    format_package_json,
    format_python_lock,
    lock_digest,
    parse_bun_lock,
    parse_python_lock,
    parse_uv_compile,
    without_integrity,
)

SIX = "sha256:" + "a" * 64
SIX_SDIST = "sha256:" + "b" * 64
IDNA = "sha256:" + "c" * 64


def test_a_windmill_lock_reads_as_pins() -> None:
    lock = parse_python_lock("# py: 3.11\nrequests==2.32.3\n\nidna==3.7\n")
    assert lock.python == "3.11"
    assert [p.requirement for p in lock.pins] == ["idna==3.7", "requests==2.32.3"]
    assert parse_python_lock("# py311\nsix==1.17.0\n").python is None  # the older header is a comment


def test_writing_then_reading_keeps_pins_and_hashes() -> None:
    lock = PythonLock("3.11", (Pin("idna", "3.10", (IDNA,)), Pin("six", "1.17.0", (SIX, SIX_SDIST))))
    text = format_python_lock(lock)
    assert text.splitlines()[:3] == ["# py: 3.11", "idna==3.10", "six==1.17.0"]  # what Windmill reads
    assert f"# hash: six==1.17.0 {SIX} {SIX_SDIST}" in text.splitlines()
    assert parse_python_lock(text) == lock
    assert format_python_lock(parse_python_lock(text)) == text  # idempotent


def test_uv_compile_output_becomes_a_lock() -> None:
    output = (
        f"idna==3.10 \\\n    --hash={IDNA}\n    # via -r requirements.in\n"
        f"six==1.17.0 \\\n    --hash={SIX} \\\n    --hash={SIX_SDIST}\n    # via -r requirements.in\n"
    )
    lock = parse_uv_compile(output, "3.11")
    assert lock.pins == (Pin("idna", "3.10", (IDNA,)), Pin("six", "1.17.0", (SIX, SIX_SDIST)))
    assert as_requirements(lock) == f"idna==3.10 --hash={IDNA}\nsix==1.17.0 --hash={SIX} --hash={SIX_SDIST}\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("six>=1\n", "line 1: 'six>=1' is not a pinned requirement"),
        ("six==1.17.0\nsix==1.16.0\n", "line 2: six is pinned twice"),
        (f"six==1.17.0\nidna==3.10\n# hash: six==1.17.0 {SIX}\n", "none for idna==3.10"),
        (f"six==1.17.0\n# hash: evil==1.0 {SIX}\n# hash: six==1.17.0 {SIX}\n", "hashes for evil==1.0"),
        ("six==1.17.0\n# hash: six==1.17.0 md5:abc\n", "is not `# hash: name==version"),
        ("-e git+https://example.com/evil.git#egg=evil\n", "is not a pinned requirement"),
        ("evil @ https://example.com/evil.whl\n", "is not a pinned requirement"),
    ],
)
def test_a_lock_that_does_not_fit_is_refused_naming_the_line(text: str, says: str) -> None:
    with pytest.raises(LockError, match=None) as raised:
        parse_python_lock(text)
    assert says in str(raised.value)


ODD = "sha512-CQpnWPrDwmP1+SMHXZhtLtJv90yiyVfluGsX5iNCVkrhQtU3TQHsUWPG9wkdk9Lgd5yNpAg9jQEo90CBaXgWMA=="
NUMBER = "sha512-Wu1VHeILBK8KAWJUAiSZQX94GmOE45Rg6/538fKwiloUu21KncEkYGPqob2oSZ5mUT73vLGrHQjKw3KMPwfDzg=="
PACKAGE_JSON = '{\n  "dependencies": {\n    "is-odd": "3.0.1"\n  }\n}'
BUN_LOCK = f"""{{
  "lockfileVersion": 1,
  "workspaces": {{
    "": {{
      "dependencies": {{
        "is-odd": "3.0.1",
      }},
    }},
  }},
  "packages": {{
    "is-number": ["is-number@6.0.0", "", {{}}, "{NUMBER}"],

    "is-odd": ["is-odd@3.0.1", "", {{ "dependencies": {{ "is-number": "^6.0.0" }} }}, "{ODD}"],
  }}
}}
"""
BUN_SCRIPT_LOCK = PACKAGE_JSON + "\n//bun.lock\n" + BUN_LOCK  # as Windmill and `kubemill lock` write it


def test_a_bun_lock_splits_as_windmill_writes_it() -> None:
    lock = parse_bun_lock(BUN_SCRIPT_LOCK)
    assert lock.dependencies() == {"is-odd": "3.0.1"} and lock.bun_lock == BUN_LOCK
    assert lock.packages() == {"is-number": ("is-number@6.0.0", NUMBER), "is-odd": ("is-odd@3.0.1", ODD)}
    assert format_bun_lock(lock) == BUN_SCRIPT_LOCK
    assert parse_bun_lock(BUN_SCRIPT_LOCK.replace("\n", "\r\n")).dependencies() == {"is-odd": "3.0.1"}
    empty = format_bun_lock(BunLock(format_package_json({}), None))
    assert empty == '{\n  "dependencies": {}\n}\n//bun.lock\n<empty>'  # Windmill's, for no imports
    assert parse_bun_lock(empty).bun_lock is None
    check_lock("bun", BUN_SCRIPT_LOCK)
    with pytest.raises(LockError, match=r"no `//bun\.lock`"):
        parse_bun_lock('{"dependencies": {}}')


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"dependencies": {"a": 1}}\n//bun.lock\n<empty>', "line 1: package.json's `dependencies`"),
        ('{\n  "dependencies": {\n}\n//bun.lock\n<empty>', "line 3: the package.json part is not JSON"),
        (
            PACKAGE_JSON + "\n//bun.lock\n<empty>",
            "line 7: bun.lock is <empty>, but package.json names is-odd",
        ),
        (
            BUN_SCRIPT_LOCK.replace('"lockfileVersion": 1,', '"lockfileVersion": 1'),
            "line 9: the bun.lock part is not JSON",
        ),
        (BUN_SCRIPT_LOCK.replace('"3.0.1",', '"3.0.0",'), "line 7: bun.lock was made for the dependencies"),
        (BUN_SCRIPT_LOCK.replace(f', "{ODD}"', ""), "line 19: bun.lock's is-odd@3.0.1 has no integrity hash"),
        (BUN_SCRIPT_LOCK.replace(ODD, "md5-abc"), "line 19: bun.lock's is-odd@3.0.1 has no integrity hash"),
    ],
)
def test_a_bun_lock_that_does_not_fit_is_refused_naming_the_line(text: str, says: str) -> None:
    with pytest.raises(LockError) as raised:
        parse_bun_lock(text)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("imports", "dependencies"),
    [
        (["is-odd", "npm:is-odd@3.0.1/index.js"], {"is-odd": "3.0.1"}),  # a pin anywhere wins over latest
        (["npm:@scope/pkg@^1.2.0/sub/path", "lodash/fp"], {"@scope/pkg": "^1.2.0", "lodash": "latest"}),
        (["./helper.ts", "/abs.ts", "node:fs", "bun", "bun:sqlite", "https://x.dev/m.ts"], {}),
        (["windmill-client", "npm:windmill-client@1", "windmill-client@1.400.0"], {}),  # the runner's own
    ],
)
def test_package_json_is_derived_from_the_imports_as_windmill_does(
    imports: list[str], dependencies: dict[str, str]
) -> None:
    assert bun_dependencies(imports) == dependencies


def test_one_package_at_two_versions_is_refused_naming_both() -> None:
    with pytest.raises(LockError, match=r"is-odd is imported at 2 versions: 3\.0\.0, 3\.0\.1"):
        bun_dependencies(["npm:is-odd@3.0.1", "is-odd@3.0.0"])


def test_a_previous_bun_lock_is_given_to_bun_without_its_integrity() -> None:
    bare = without_integrity(BUN_LOCK)
    assert ODD not in bare and NUMBER not in bare and '"is-odd@3.0.1", "", {' in bare
    assert "sha512" not in bare


def test_a_locked_bun_job_runs_with_auto_install_off() -> None:
    from kubemill.k8s.builders import DEPS_CLAIM, DEPS_DIR, RunIdentity
    from kubemill.k8s.jobs import build_job
    from kubemill.runners import RunContext, command_for

    assert "--no-install" not in command_for("bun") and "--no-install" in command_for("bun", locked=True)
    assert command_for("python3", locked=True) == command_for("python3")
    run = RunIdentity(namespace="ns", name="r", uid="u")
    target = RunTarget(path="f/a/b", language="bun", code="export function main() {}\n", lock=BUN_SCRIPT_LOCK)
    job = build_job(
        run, target, 0, ["args.json"], RunContext(workspace="ns", job_id="j"), deps_claim=DEPS_CLAIM
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][:3] == ["bun", "run", "--no-install"]
    (init,) = pod["initContainers"]  # the namespace's shared cache: the install step alone writes it
    assert init["command"] == pod["containers"][0]["command"]
    assert {"name": "KUBEMILL_INSTALL_ONLY", "value": "1"} in init["env"]
    assert {"name": "deps", "mountPath": DEPS_DIR, "readOnly": True} in pod["containers"][0]["volumeMounts"]


def test_the_lock_travels_in_the_code_configmap_and_changes_its_name() -> None:
    plain = RunTarget(path="f/a/b", language="python3", code="def main(): pass\n")
    locked = RunTarget(path="f/a/b", language="python3", code=plain.code, lock="six==1.17.0\n")
    assert plain.content_hash == content_hash("python3", plain.code)  # unchanged without a lock
    assert locked.content_hash != plain.content_hash
    assert build_code_configmap("ns", locked, None)["data"] == {
        "main.py": plain.code,
        LOCK_FILE: "six==1.17.0\n",
    }
    assert LOCK_FILE not in build_code_configmap("ns", plain, None)["data"]
    assert lock_digest("a") != lock_digest("b")


def test_a_lock_is_refused_for_other_languages_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"lock is for python3 or bun scripts .*, not deno"):
        ScriptSpec.model_validate({"path": "f/a/b", "language": "deno", "content": "x", "lock": "a==1"})
    with pytest.raises(ValueError, match=r"lock is for python3 or bun scripts .*, not go"):
        InlineScript.model_validate({"language": "go", "content": "x", "lock": "a==1"})
    for language in ("python3", "bun"):
        assert ScriptSpec.model_validate({"path": "f/a/b", "language": language, "content": "x", "lock": "a"})
    assert LOCKED == LOCKED_LANGUAGES  # the models' copy of the runners' list


def test_a_locked_python_job_installs_in_an_init_container_and_mounts_the_cache_read_only() -> None:
    from kubemill.k8s.builders import DEPS_CLAIM, DEPS_DIR, RunIdentity
    from kubemill.k8s.jobs import build_job
    from kubemill.models.scripts import EnvVar
    from kubemill.runners import RunContext

    run = RunIdentity(namespace="ns", name="r", uid="u")
    env = (EnvVar(name="UV_INDEX_URL", value="https://evil.example/simple"),)
    locked = RunTarget(
        path="f/a/b", language="python3", code="def main(): pass\n", lock="six==1.17.0\n", env=env
    )
    pod = build_job(
        run, locked, 0, ["args.json"], RunContext(workspace="ns", job_id="j"), deps_claim=DEPS_CLAIM
    )["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    runner = pod["containers"][0]
    assert {"name": "deps", "mountPath": DEPS_DIR, "readOnly": True} in runner["volumeMounts"]
    assert {"name": "deps", "mountPath": DEPS_DIR} in init["volumeMounts"]  # only the init step writes it
    assert {m["name"] for m in init["volumeMounts"]} == {"code", "deps", "tmp"}  # no args, secrets, resources
    assert {e["name"] for e in init["env"]} == {
        "HOME", "KUBEMILL_INSTALL_ONLY", "KUBEMILL_CACHE_DIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"
    }  # fmt: skip  # none of the Script's env (an index URL would redirect the shared install)
    assert init["securityContext"] == runner["securityContext"]
    plain = RunTarget(path="f/a/b", language="python3", code="def main(): pass\n")
    for target in (plain, RunTarget(path="f/a/b", language="bash", code="echo 1\n")):
        spec = build_job(
            run, target, 0, ["args.json"], RunContext(workspace="ns", job_id="j"), deps_claim=DEPS_CLAIM
        )
        assert "initContainers" not in spec["spec"]["template"]["spec"]  # only a locked Python run uses it


def test_a_python_rawscript_steps_lock_reaches_its_scriptrun_and_others_do_not() -> None:
    from kubemill.engine import CreateRun, RawScriptSource
    from kubemill.k8s.flowruns import child_run_manifest
    from kubemill.models.flows import FlowRun

    parent = FlowRun.model_validate(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "FlowRun",
            "metadata": {"name": "f", "namespace": "ns", "uid": "u"},
            "spec": {"flowPath": "f/a/flow"},
        }
    )

    def step(language: str) -> dict[str, object]:
        source = RawScriptSource(language=language, content="x", lock="# py: 3.11\nsix==1.17.0\n")
        action = CreateRun(kind="ScriptRun", name="f-a", step="a", script=source)
        script: dict[str, object] = child_run_manifest(action, parent)["spec"]["script"]
        return script

    assert step("python3")["lock"] == "# py: 3.11\nsix==1.17.0\n"
    assert step("bun")["lock"] == "# py: 3.11\nsix==1.17.0\n"  # checked by the ScriptRun's catalog
    assert "lock" not in step("deno")  # the Deno runner resolves its imports itself
