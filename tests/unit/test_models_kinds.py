"""Every example manifest round-trips through the models; each kind's rules hold in Python as in the CRDs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubemill.models.flows import Flow
from kubemill.models.kinds import KINDS, parse_manifest
from kubemill.models.openflow import load_flow_yaml
from kubemill.models.scripts import Script, runtime_of

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BRIEF = Path("/work/shared/seed/windmill-skill.md")


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((EXAMPLES / "manifests").rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc and doc.get("apiVersion", "").startswith("kubemill.dev/"):
                docs.append((f"{path.relative_to(EXAMPLES)}#{i}", doc))
    return docs


EXAMPLE_DOCUMENTS = example_documents()


def test_examples_cover_every_kind_and_every_language() -> None:
    kinds = {doc["kind"] for _, doc in EXAMPLE_DOCUMENTS}
    assert kinds == {k.name for k in KINDS}
    languages = {
        runtime_of(doc["spec"]["language"]) for _, doc in EXAMPLE_DOCUMENTS if doc["kind"] == "Script"
    }
    assert languages >= {"python3", "deno", "go", "bash"}


@pytest.mark.parametrize(("where", "manifest"), EXAMPLE_DOCUMENTS, ids=[w for w, _ in EXAMPLE_DOCUMENTS])
def test_every_example_round_trips_through_the_models(where: str, manifest: dict[str, Any]) -> None:
    obj = parse_manifest(manifest)
    assert obj.to_manifest() == manifest


def test_every_script_a_flow_references_is_an_example() -> None:
    scripts = {d["spec"]["path"] for _, d in EXAMPLE_DOCUMENTS if d["kind"] == "Script"}
    for _, doc in EXAMPLE_DOCUMENTS:
        if doc["kind"] == "Flow":
            flow = parse_manifest(doc)
            assert isinstance(flow, Flow)
            used = {m.value.path for m in flow.spec.value.all_modules() if m.value.type == "script"}
            assert used <= scripts, (
                f"{doc['metadata']['name']} uses scripts without examples: {used - scripts}"
            )


def test_the_flow_example_is_the_brief_flow_unchanged() -> None:
    windmill = EXAMPLES / "windmill/f/order_processing/order_processing.flow/flow.yaml"
    manifest = yaml.safe_load((EXAMPLES / "manifests/flows/order-processing.yaml").read_text())
    spec = {k: v for k, v in manifest["spec"].items() if k != "path"}
    assert spec == yaml.safe_load(windmill.read_text())
    assert load_flow_yaml(windmill.read_text()).to_document() == spec
    if BRIEF.exists():  # outside this checkout the copy in examples/ stands for the brief
        block = re.search(r"```yaml\n(# flows/order_processing_flow\.yaml.*?)```", BRIEF.read_text(), re.S)
        assert block is not None and block.group(1) == windmill.read_text()


def script(**spec: Any) -> dict[str, Any]:
    base = {"path": "f/a/b", "language": "python3"}
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Script",
        "metadata": {"name": "s"},
        "spec": base | spec,
    }


def manifest(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubemill.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}


MALFORMED = [
    (
        "both content and contentFrom",
        script(content="x", contentFrom={"configMapKeyRef": {"name": "a", "key": "b"}}),
        "set exactly one of spec.content",
    ),
    ("neither content nor contentFrom", script(), "set exactly one of spec.content"),
    ("bad path", script(path="/tmp/x.py", content="x"), "must be a Windmill path"),
    ("path without a name", script(path="f/only", content="x"), "must be a Windmill path"),
    ("unknown language", script(language="ruby", content="x"), "python3"),
    ("wrong type", script(content="x", timeoutSeconds="ten"), "timeoutSeconds"),
    ("unknown field", script(content="x", contnet="y"), "contnet"),
    (
        "schedule with both targets",
        manifest("Schedule", {"schedule": "* * * * *", "scriptPath": "f/a/b", "flowPath": "f/a/c"}),
        "set exactly one of spec.scriptPath or spec.flowPath",
    ),
    (
        "cron with 3 fields",
        manifest("Schedule", {"schedule": "* * *", "scriptPath": "f/a/b"}),
        "cron expression",
    ),
    (
        "unknown time zone",
        manifest("Schedule", {"schedule": "* * * * *", "scriptPath": "f/a/b", "timezone": "Mars/Base"}),
        "IANA time zone",
    ),
    (
        "variable without a value",
        manifest("Variable", {"path": "u/admin/v"}),
        "set exactly one of spec.value",
    ),
    (
        "resource field twice",
        manifest(
            "Resource",
            {
                "path": "u/a/r",
                "resourceType": "t",
                "value": {"k": 1},
                "valueFrom": {"k": {"secretKeyRef": {"name": "s", "key": "k"}}},
            },
        ),
        "both in spec.value and in spec.valueFrom",
    ),
    ("run without a target", manifest("ScriptRun", {"args": {}}), "set exactly one of spec.scriptPath"),
    (
        "flow with an unknown module type",
        manifest(
            "Flow", {"path": "f/a/b", "value": {"modules": [{"id": "charge", "value": {"type": "http"}}]}}
        ),
        "step 'charge': unknown module type 'http'",
    ),
    ("not a kubemill kind", {"apiVersion": "v1", "kind": "ConfigMap"}, "not a kubemill manifest"),
]


@pytest.mark.parametrize(("case", "bad", "message"), MALFORMED, ids=[c for c, _, _ in MALFORMED])
def test_malformed_manifests_are_refused_with_a_message(case: str, bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_manifest(bad)


def test_typescript_is_run_by_deno() -> None:
    obj = parse_manifest(script(language="typescript", content="x"))
    assert isinstance(obj, Script)
    assert runtime_of(obj.spec.language) == "deno"


def test_a_scriptrun_mounts_no_claim_but_its_own_flowruns() -> None:
    from kubemill.models.scripts import ScriptRunSpec

    spec = {"scriptPath": "f/x/y", "flowRun": "order-1", "sharedClaim": "order-1-shared"}
    assert ScriptRunSpec.model_validate(spec).shared_claim == "order-1-shared"
    for bad in ({**spec, "sharedClaim": "database-data"}, {"scriptPath": "f/x/y", "sharedClaim": "x-shared"}):
        with pytest.raises(ValueError, match="only the claim of the step's own FlowRun"):
            ScriptRunSpec.model_validate(bad)
