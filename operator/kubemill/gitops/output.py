"""The output of `kubemill sync`: object names, deterministic YAML, the folder with its kustomization.yaml.

Everything here is a pure function of the manifests, so an unchanged workspace gives byte-identical files;
`write_output` only touches files whose bytes change and removes the generated files a workspace no longer
produces (files it did not generate are left alone), so ArgoCD and Flux see deletions as deletions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kubemill.gitops.wmill_layout import GENERATED, ORDER, SOURCE_ANNOTATION, Result
from kubemill.models.kinds import KINDS_BY_NAME

_NOT_DNS = re.compile(r"[^a-z0-9]+")
MAX_NAME = 63


def object_name(identity: str) -> str:
    """DNS-1123 label for a Windmill path or type name (`f/order_processing/x` -> `f-order-processing-x`)."""
    slug = _NOT_DNS.sub("-", identity.lower()).strip("-") or "x"
    if len(slug) <= MAX_NAME:
        return slug
    return f"{slug[: MAX_NAME - 11].rstrip('-')}-{_digest(identity)}"


def _digest(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:10]


def _identity(manifest: Mapping[str, Any]) -> str:
    return str(manifest["metadata"]["name"])


def name_all(manifests: list[dict[str, Any]]) -> None:
    """Give each manifest its name; two identities with the same slug both get a hash suffix (stable)."""
    taken: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for manifest in manifests:
        taken.setdefault((manifest["kind"], object_name(_identity(manifest))), []).append(manifest)
    for (_, name), group in taken.items():
        for manifest in group:
            identity = _identity(manifest)
            unique = name if len(group) == 1 else f"{name[: MAX_NAME - 11].rstrip('-')}-{_digest(identity)}"
            manifest["metadata"]["name"] = unique
    manifests.sort(key=lambda m: (ORDER.index(m["kind"]), m["metadata"]["name"]))


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (code stays readable in review), nothing else changed."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    """Deterministic YAML: keys in insertion order, no line folding, multi-line strings as blocks."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)


def manifest_file(manifest: Mapping[str, Any]) -> str:
    """Where a manifest goes in the output: `<plural>/<name>.yaml`."""
    return f"{KINDS_BY_NAME[manifest['kind']].plural}/{manifest['metadata']['name']}.yaml"


def render(result: Result, *, namespace: str | None = None) -> dict[str, str]:
    """The output folder as {relative path: text}: one file per manifest and a `kustomization.yaml`."""
    files = {
        manifest_file(
            m
        ): f"{GENERATED} from {m['metadata']['annotations'][SOURCE_ANNOTATION]}; do not edit.\n" + to_yaml(m)
        for m in result.manifests
    }
    header = [f"{GENERATED} from a Windmill workspace; do not edit, re-run it."]
    if result.secret_keys:
        header.append(f"# Secret values are not generated: provide Secret {result.secret} with the keys")
        header += [f"#   {key}" for key in sorted(result.secret_keys)]
    kustomization: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        kustomization["namespace"] = namespace
    kustomization["resources"] = [manifest_file(m) for m in result.manifests]
    files["kustomization.yaml"] = "\n".join(header) + "\n" + to_yaml(kustomization)
    return files


def write_output(out: Path, files: Mapping[str, str]) -> list[str]:
    """Write the files (only those whose bytes change), delete generated files no longer produced.

    Returns the relative paths removed. Files in `out` that `kubemill sync` did not generate are left alone.
    """
    removed = []
    if out.is_dir():
        for existing in sorted(out.rglob("*.yaml")):
            rel = existing.relative_to(out).as_posix()
            if rel not in files and existing.read_text(encoding="utf-8").startswith(GENERATED):
                existing.unlink()
                removed.append(rel)
    for rel, text in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed
