"""`kubemill crds`: CRDs generated from the models, so the API server and the operator agree on every kind.

Pydantic's JSON Schema is not a Kubernetes *structural* schema: it uses `$ref`, `anyOf` for optional fields,
`oneOf` for discriminated unions, and recursion (flow steps contain steps). `structural()` rewrites it:

- `$ref` is inlined; a reference back into a model already being expanded (a step inside a loop or branch)
  becomes an object with `x-kubernetes-preserve-unknown-fields`: the top levels of a flow are validated by the
  API server, deeper levels by the operator (which parses the whole tree with the same models).
- `anyOf [X, null]` becomes X; unions of objects (discriminated on `type`) become one object with every
  variant's properties, a CEL rule listing the allowed `type`s (left out where the parent's own rule checks
  it and names the step) and one CEL rule per variant for the fields that variant requires. CEL rules, not
  an enum: the API server skips every CEL rule once a schema check fails, and the step-naming rule is the
  useful message. Unions of other differing types, and open JSON values, preserve unknown fields.
- `default`, `title` and other keys Kubernetes does not allow are dropped: what is stored is what was
  applied, except the few fields marked `x-kubemill-server-default` (a column would be blank otherwise,
  e.g. a Schedule's `enabled`); `x-kubernetes-*` keys from the models are kept.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubemill.models.common import GROUP, VERSION
from kubemill.models.kinds import CATEGORY, KINDS, Kind

Schema = dict[str, Any]

PRESERVE: Schema = {"x-kubernetes-preserve-unknown-fields": True}
KEEP_DEFAULT = "x-kubemill-server-default"
"""A field marked so (in `json_schema_extra`) keeps its default in the CRD: the API server fills it in."""
HEADER = "# Generated from operator/kubemill/models by `kubemill crds -o crds/`. Do not edit.\n"
_KEPT = {
    "description",
    "enum",
    "format",
    "maximum",
    "minimum",
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "maxProperties",
    "minProperties",
    "pattern",
    "nullable",
}
_FORMATS = {"date-time", "date", "int32", "int64", "float", "double", "byte", "uuid", "email", "uri"}


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], expanding: tuple[str, ...]) -> Schema:
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name in expanding:
            return {"type": "object", **PRESERVE}
        inner = _convert(defs[name], defs, (*expanding, name))
        return _with_outer_keys(inner, node, defs, expanding)
    for junctor in ("anyOf", "oneOf", "allOf"):
        if junctor in node:
            variants = [_convert(v, defs, expanding) for v in node[junctor] if v.get("type") != "null"]
            merged = _merge(variants, discriminated="discriminator" in node)
            return _with_outer_keys(merged, node, defs, expanding)
    return _convert_plain(node, defs, expanding)


def _with_outer_keys(inner: Schema, node: Mapping[str, Any], defs: Any, expanding: tuple[str, ...]) -> Schema:
    """Keep what sits next to a `$ref`/union (a field's description, its CEL rules, list-type markers)."""
    outer = _convert_plain(
        {k: v for k, v in node.items() if k not in ("$ref", "anyOf", "oneOf", "allOf")}, defs, expanding
    )
    outer.pop("x-kubernetes-preserve-unknown-fields", None)
    rules = inner.get("x-kubernetes-validations", []) + outer.pop("x-kubernetes-validations", [])
    result = {**inner, **outer}
    if rules:
        result["x-kubernetes-validations"] = rules
    return result


def _convert_plain(node: Mapping[str, Any], defs: Mapping[str, Any], expanding: tuple[str, ...]) -> Schema:  # noqa: C901, PLR0912
    out: Schema = {k: v for k, v in node.items() if k in _KEPT or k.startswith("x-kubernetes-")}
    if "description" in out:
        out["description"] = " ".join(str(out["description"]).split())
    if out.get("format") not in _FORMATS:
        out.pop("format", None)
    if node.get(KEEP_DEFAULT):
        out["default"] = node["default"]
    if "const" in node:
        out["enum"] = [node["const"]]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    kind = node.get("type")
    if kind is None:
        if any(k in node for k in ("enum", "const")):
            out["type"] = "string"
        elif not any(k.startswith("x-kubernetes-") for k in out if k != "x-kubernetes-validations"):
            out.update(PRESERVE)
        return out
    out["type"] = kind
    if kind == "object":
        properties = node.get("properties", {})
        extra = node.get("additionalProperties")
        if properties:
            out["properties"] = {k: _convert(v, defs, expanding) for k, v in properties.items()}
            _drop_checked_discriminators(out)
        if node.get("required"):
            out["required"] = list(node["required"])
        if extra is True or (isinstance(extra, Mapping) and not extra) or (not properties and extra is None):
            out.update(PRESERVE)
        elif isinstance(extra, Mapping):
            if properties or (values := _convert(extra, defs, expanding)) == PRESERVE:
                out.update(PRESERVE)
            else:
                out["additionalProperties"] = values
    elif kind == "array":
        out["items"] = _convert(node.get("items", {}), defs, expanding)
    return out


def _drop_checked_discriminators(node: Schema) -> None:
    """A rule on `node` checking `self.<p>.type in [...]` (naming the step) replaces <p>'s own type rule."""
    for rule in node.get("x-kubernetes-validations", ()):
        for name, prop in node["properties"].items():
            if f"self.{name}.type in " in rule["rule"] and "x-kubernetes-validations" in prop:
                prop["x-kubernetes-validations"] = [
                    r for r in prop["x-kubernetes-validations"] if not r["rule"].startswith("self.type in ")
                ]


def _merge(variants: list[Schema], *, discriminated: bool) -> Schema:
    """One structural schema accepting every variant."""
    if len(variants) == 1:
        return variants[0]
    types = {v.get("type") for v in variants}
    if types == {"object"} and all("properties" in v for v in variants):
        return _merge_objects(variants, discriminated=discriminated)
    if types == {"integer", "number"}:
        return {"type": "number"}
    if types == {"integer", "string"}:
        return {"x-kubernetes-int-or-string": True}
    return dict(PRESERVE)


def _merge_objects(variants: list[Schema], *, discriminated: bool) -> Schema:
    properties: dict[str, Schema] = {}
    for variant in variants:
        for name, schema in variant["properties"].items():
            if name not in properties:
                properties[name] = schema
            elif properties[name] != schema:
                properties[name] = _merge_property(properties[name], schema)
    required = set.intersection(*(set(v.get("required", ())) for v in variants))
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = sorted(required)
    if any(v.get("x-kubernetes-preserve-unknown-fields") for v in variants):
        out.update(PRESERVE)
    if discriminated and "type" in properties:
        tags = [e for v in variants for e in v["properties"]["type"].get("enum", ())]
        properties["type"] = {"type": "string", "maxLength": 64}
        out["x-kubernetes-validations"] = [
            {"rule": f"self.type in {tags}", "message": f"type must be one of: {', '.join(tags)}"},
            *_variant_rules(variants, required),
        ]
    return out


def _merge_property(a: Schema, b: Schema) -> Schema:
    if a.get("type") == b.get("type") and "enum" in a and "enum" in b:
        return {**a, "enum": a["enum"] + [e for e in b["enum"] if e not in a["enum"]]}
    if a.get("type") == b.get("type") == "object" and "properties" in a and "properties" in b:
        return _merge_objects([a, b], discriminated=False)
    if a.get("type") == b.get("type") and a.get("type") in ("string", "integer", "number", "boolean"):
        return {"type": a["type"]}
    return dict(PRESERVE)


def _variant_rules(variants: list[Schema], common: set[str]) -> list[dict[str, str]]:
    """For each variant of a union discriminated on `type`: the fields it requires beyond the shared ones."""
    rules = []
    for variant in variants:
        (tag,) = variant["properties"]["type"]["enum"]
        needed = sorted(set(variant.get("required", ())) - common)
        if needed:
            has = " && ".join(f"has(self.{name})" for name in needed)
            rules.append(
                {
                    "rule": f"self.type != '{tag}' || ({has})",
                    "message": f"type {tag} needs {', '.join(needed)}",
                }
            )
    return rules


_ORDER = ("type", "description", "enum", "format", "properties", "additionalProperties", "items", "required")


def _ordered(node: Any) -> Any:
    """Keys in reading order (type and description first, CEL rules last), recursively."""
    if isinstance(node, list):
        return [_ordered(v) for v in node]
    if not isinstance(node, dict):
        return node
    rank = {k: i for i, k in enumerate(_ORDER)}
    keys = sorted(node, key=lambda k: (rank.get(k, len(_ORDER)), k.startswith("x-kubernetes-validations"), k))
    if "properties" in node and isinstance(node["properties"], dict) and "type" in node:
        node = {**node, "properties": {k: _ordered(v) for k, v in node["properties"].items()}}
        return {k: node[k] if k == "properties" else _ordered(node[k]) for k in keys}
    return {k: _ordered(node[k]) for k in keys}


def structural(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of a model (see the module docstring)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    result: Schema = _ordered(_convert(schema, defs, (model.__name__,)))
    return result


def crd(kind: Kind) -> Schema:
    """The CustomResourceDefinition of one kind."""
    root: Schema = {
        "type": "object",
        "description": " ".join((kind.model.__doc__ or kind.name).split()),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(kind.spec),
            "status": structural(kind.status),
        },
        "required": ["spec"],
    }
    version: Schema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": [
            {
                "name": c.name,
                "type": c.type,
                "jsonPath": c.json_path,
                **({"description": c.description} if c.description else {}),
                **({"priority": c.priority} if c.priority else {}),
            }
            for c in kind.columns
        ],
        "schema": {"openAPIV3Schema": root},
    }
    if kind.selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in kind.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name, "labels": {"app.kubernetes.io/part-of": "kubemill"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.name,
                "listKind": f"{kind.name}List",
                "plural": kind.plural,
                "singular": kind.name.lower(),
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def crd_files() -> dict[str, str]:
    """File name -> YAML text, one CRD per kind (what `crds/` holds)."""
    return {
        f"{GROUP}_{k.plural}.yaml": HEADER + yaml.safe_dump(crd(k), sort_keys=False, width=120) for k in KINDS
    }


def add_arguments_crds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output-dir", type=Path, help="write one file per kind here instead of printing"
    )


def cli_crds(args: argparse.Namespace) -> int:
    files = crd_files()
    if args.output_dir is None:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.output_dir / name).write_text(text)
    print(f"wrote {len(files)} CRDs to {args.output_dir}", file=sys.stderr)
    return 0
