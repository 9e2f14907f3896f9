"""The committed CRDs are exactly what the models generate, and every schema is structural."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubemill.crdgen import cli_crds, crd, crd_files, structural
from kubemill.models.kinds import KINDS, Kind
from kubemill.models.openflow import FlowValue

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "discriminator"}


def test_committed_crds_match_the_models() -> None:
    expected = crd_files()
    on_disk = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(expected), (
        "crds/ has missing or stale files: run `kubemill crds -o crds/`"
    )
    stale = [name for name, text in expected.items() if on_disk[name] != text]
    assert not stale, f"crds/ is out of date ({', '.join(stale)}): run `kubemill crds -o crds/`"


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """The rules of a Kubernetes structural schema that a generator could break."""
    problems = []
    for path, node in nodes(schema):
        open_ended = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        if "type" not in node and not open_ended:
            problems.append(f"{path or '<root>'}: no type")
        if FORBIDDEN & node.keys():
            problems.append(f"{path}: {sorted(FORBIDDEN & node.keys())}")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: both properties and additionalProperties")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if isinstance(node.get("exclusiveMinimum"), int | float) and not isinstance(
            node["exclusiveMinimum"], bool
        ):
            problems.append(f"{path}: exclusiveMinimum must be a boolean in OpenAPI v3.0")
        for key in node.get("x-kubernetes-list-map-keys", ()):
            if key not in node["items"].get("required", ()):
                problems.append(f"{path}: list map key {key} is not required")
    return problems


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_schema_is_structural(kind: Kind) -> None:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []


def test_the_checker_catches_what_a_raw_pydantic_schema_gets_wrong() -> None:
    raw = FlowValue.model_json_schema()
    assert structural_problems(raw) != []
    assert structural_problems(structural(FlowValue)) == []


def resolves(schema: dict[str, Any], json_path: str) -> bool:
    """Does a printer column's JSONPath name a field the schema declares (filters and metadata aside)?"""
    node = schema
    for part in re.sub(r"\[\?\(.*?\)\]", "[]", json_path).strip(".").split("."):
        name, is_list = part.removesuffix("[]"), part.endswith("[]")
        if name == "metadata":
            return True
        props = node.get("properties", {})
        if name not in props:
            return False
        node = props[name]["items"] if is_list else props[name]
    return True


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_printer_columns_and_selectable_fields_name_declared_fields(kind: Kind) -> None:
    version = crd(kind)["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    missing = [
        c["jsonPath"] for c in version["additionalPrinterColumns"] if not resolves(schema, c["jsonPath"])
    ]
    missing += [
        f["jsonPath"] for f in version.get("selectableFields", []) if not resolves(schema, f["jsonPath"])
    ]
    assert missing == []
    assert version["subresources"] == {"status": {}}
    assert crd(kind)["spec"]["names"]["categories"] == ["kubemill"]


def test_only_fields_marked_for_it_are_defaulted_by_the_api_server() -> None:
    defaulted = {
        f"{kind.name}{path}"
        for kind in KINDS
        for path, node in nodes(crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        if "default" in node
    }
    assert defaulted == {"Schedule.spec.timezone", "Schedule.spec.enabled"}


def test_every_cel_rule_has_a_message() -> None:
    for kind in KINDS:
        schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in nodes(schema):
            for rule in node.get("x-kubernetes-validations", ()):
                assert rule.get("message"), f"{kind.name}{path}: rule {rule['rule']} has no message"


def test_kubemill_crds_prints_a_yaml_stream_or_writes_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_crds(argparse.Namespace(output_dir=None)) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["spec"]["names"]["kind"] for d in docs] == [k.name for k in KINDS]
    assert cli_crds(argparse.Namespace(output_dir=tmp_path / "out")) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(crd_files())


def test_docs_describe_every_kind_field_and_column() -> None:
    docs = (REPO / "docs/api.md").read_text()
    for kind in KINDS:
        section = docs.split(f"\n## {kind.name}\n", 1)[1].split("\n## ", 1)[0]
        for name, field in kind.spec.model_fields.items():
            assert f"`{field.alias or name}" in section, (
                f"docs/api.md: {kind.name}.spec.{field.alias or name}"
            )
        for column in kind.columns:
            assert f"`{column.name.upper()}`" in section, f"docs/api.md: {kind.name} column {column.name}"
