"""The conformance cases: flow documents written from Windmill's own flow tests, with the results Windmill's
tests expect. One YAML file per case under cases/:

- `windmill`: the Windmill test the case comes from (file::test name), or `own case (...)` for a case
  written from Windmill's documented semantics or an issue; `args`, `approve` (step ids), `trigger_event`
  (the run is started as by a trigger with this event: `--trigger-event`, a FlowRun's `spec.triggerEvent`),
- `flow`: the OpenFlow document (`value`, `schema`), `scripts`: workspace scripts (`f/x/name.py`: code),
- `expect`: `exit` (kubemill run's exit code), and `result` (the JSON on stdout, exactly) or `subset`
  (a dict/list pattern the result must contain) or `refused` (a text the refusal on stderr must contain),
- `cluster: true`: also run as a FlowRun on the test control plane (tests/conformance/test_cluster.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CASES = Path(__file__).parent / "cases"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    name: str
    windmill: str
    flow: dict[str, Any]
    expect: dict[str, Any]
    args: dict[str, Any] = field(default_factory=dict)
    approve: tuple[str, ...] = ()
    scripts: dict[str, str] = field(default_factory=dict)
    cluster: bool = False
    trigger_event: dict[str, Any] | None = None


def load_cases() -> list[Case]:
    cases = []
    for file in sorted(CASES.glob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        cases.append(
            Case(
                name=file.stem,
                windmill=data["windmill"],
                flow=data["flow"],
                expect=data["expect"],
                args=data.get("args") or {},
                approve=tuple(data.get("approve") or ()),
                scripts=data.get("scripts") or {},
                cluster=bool(data.get("cluster")),
                trigger_event=data.get("trigger_event"),
            )
        )
    return cases


@dataclass(frozen=True)
class Outcome:
    exit: int
    result: Any
    stderr: str


def write_workspace(case: Case, folder: Path) -> Path:
    """A Windmill-layout workspace holding the case's flow (`f/conformance/<name>.flow`) and scripts."""
    (folder / "wmill.yaml").write_text("defaultTs: deno\n", encoding="utf-8")
    flow_dir = folder / "f" / "conformance" / f"{case.name}.flow"
    flow_dir.mkdir(parents=True)
    (flow_dir / "flow.yaml").write_text(yaml.safe_dump({"summary": case.name, **case.flow}), encoding="utf-8")
    for path, content in case.scripts.items():
        file = folder / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content, encoding="utf-8")
    return flow_dir / "flow.yaml"


def with_ids(node: Any, counter: list[int] | None = None) -> Any:
    """The flow with an `id` written into every step that has none (`s1`, `s2`...): to measure a kubemill
    that refuses id-less steps on the rest of a case."""
    counter = counter if counter is not None else [0]
    if isinstance(node, list):
        return [with_ids(item, counter) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: with_ids(value, counter) for key, value in node.items()}
    if isinstance(node.get("value"), dict) and "type" in node["value"] and "id" not in node:
        counter[0] += 1
        node["id"] = f"s{counter[0]}"
    return node


def run_locally(case: Case, folder: Path, kubemill: list[str] | None = None, ids: bool = False) -> Outcome:
    """`kubemill run` on the case, as a user would run it."""
    if ids:
        case = Case(**{**case.__dict__, "flow": with_ids(case.flow)})
    file = write_workspace(case, folder)
    command = [*(kubemill or [sys.executable, "-m", "kubemill.cli"]), "run", str(file)]
    command += ["--workspace", str(folder), "--input", json.dumps(case.args)]
    for step in case.approve:
        command += ["--approve", step]
    if case.trigger_event is not None:
        command += ["--trigger-event", json.dumps(case.trigger_event)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, env=dict(os.environ), cwd=folder
    )
    result = json.loads(done.stdout) if done.stdout.strip() else None
    return Outcome(done.returncode, result, done.stderr)


def matches(pattern: Any, value: Any) -> bool:
    """`value` has everything `pattern` has: dict keys (recursively), list items in order, equal scalars;
    a string pattern starting with `~` is a substring of the value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches(v, value[k]) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return (
            isinstance(value, list)
            and len(pattern) == len(value)
            and all(matches(p, v) for p, v in zip(pattern, value, strict=True))
        )
    if isinstance(pattern, str) and pattern.startswith("~"):
        return isinstance(value, str) and pattern[1:] in value
    return bool(pattern == value and type(pattern) is type(value))


def check(case: Case, exit_code: int, result: Any, stderr: str = "") -> list[str]:
    """What differs from the case's expectation (empty when it conforms)."""
    expect = case.expect
    problems = []
    if exit_code != expect.get("exit", 0):
        problems.append(f"exit {exit_code}, expected {expect.get('exit', 0)}")
    if "result" in expect and not (matches(expect["result"], result) and matches(result, expect["result"])):
        problems.append(f"result {json.dumps(result)}, expected {json.dumps(expect['result'])}")
    if "subset" in expect and not matches(expect["subset"], result):
        problems.append(f"result {json.dumps(result)} does not match {json.dumps(expect['subset'])}")
    if "refused" in expect and expect["refused"] not in stderr:
        problems.append(f"stderr does not say {expect['refused']!r}: {stderr.strip()[-400:]}")
    return problems


def main() -> int:
    """`python tests/conformance/cases.py [--with-ids] [KUBEMILL...]`: run every case locally (with the
    given kubemill command, default this checkout's), print a table."""
    import tempfile

    ids = "--with-ids" in sys.argv
    kubemill = [a for a in sys.argv[1:] if a != "--with-ids"] or None
    passed = failed = 0
    for case in load_cases():
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run_locally(case, Path(tmp), kubemill, ids)
        problems = check(case, outcome.exit, outcome.result, outcome.stderr)
        passed, failed = passed + (not problems), failed + bool(problems)
        verdict = "pass" if not problems else "FAIL"
        print(f"{verdict}  {case.name:45} {case.windmill}  {'; '.join(problems)[:300]}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
