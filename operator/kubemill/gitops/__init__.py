"""`kubemill sync DIR [-o OUT]`: a Windmill-layout workspace (what `wmill sync pull` writes) as manifests.

Teams that already keep a Windmill workspace in git point ArgoCD or Flux at the output of this command: one
manifest per Script, Flow, Schedule, ResourceType, Resource and Variable, plus a `kustomization.yaml`. Every
manifest is validated with the same models the operator and the CRDs use, so a workspace that would be
refused on apply fails here, naming its file. The output is a pure function of the workspace's files (sorted
walks, fixed key order, no clock), so re-running on an unchanged workspace rewrites identical bytes and a git
diff shows only real changes. Runs are never generated: they are created at run time and are not owned by
definitions, so ArgoCD can prune a definition without touching its runs.

Secret values are never written: a secret Variable (and a resource field its ResourceType marks
`password: true`) reads a key of one Secret per workspace (`--secret`, default `kubemill-secrets`) that is
provisioned out of band (Sealed Secrets, External Secrets, `kubectl create secret`); the keys it needs are
listed in the kustomization's header and on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from kubemill.gitops.output import name_all, render, to_yaml, write_output
from kubemill.gitops.wmill_layout import (
    DEFAULT_SECRET,
    ORDER,
    SOURCE_ANNOTATION,
    Result,
    SyncError,
    read_workspace,
)
from kubemill.models.kinds import parse_manifest

__all__ = ["Result", "SyncError", "add_arguments_sync", "cli_sync", "sync_workspace"]


def _validate(result: Result) -> None:
    for manifest in result.manifests:
        try:
            parse_manifest(manifest)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            result.errors.append(f"{manifest['metadata']['annotations'][SOURCE_ANNOTATION]}: {problems}")


def sync_workspace(
    root: Path, *, default_ts: str | None = None, secret: str = DEFAULT_SECRET, skip: Path | None = None
) -> Result:
    """A workspace's manifests, named and validated (problems are in `result.errors`, nothing raised)."""
    if not root.is_dir():
        raise SyncError(f"{root} is not a directory")
    result = read_workspace(root, default_ts=default_ts, secret=secret, skip=skip)
    name_all(result.manifests)
    _validate(result)
    return result


# --- the command -------------------------------------------------------------------------------------------


def add_arguments_sync(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workspace", metavar="DIR", help="a Windmill-layout workspace (`wmill sync pull`)")
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="write one file per object and a kustomization.yaml here "
        "(default: print one YAML stream on stdout)",
    )  # fmt: skip
    parser.add_argument("-n", "--namespace", help="namespace (workspace) set in the kustomization.yaml")
    parser.add_argument(
        "--secret", default=DEFAULT_SECRET, help=f"the Secret secret values are read from ({DEFAULT_SECRET})"
    )
    parser.add_argument(
        "--default-ts",
        choices=("deno", "bun"),
        help="runtime for a bare .ts (default: wmill.yaml, else deno)",
    )


def cli_sync(args: argparse.Namespace) -> int:
    """Print or write the manifests; exit 1 (writing nothing) when any file cannot become a valid manifest."""
    root = Path(args.workspace)
    out = Path(args.output) if args.output else None
    try:
        result = sync_workspace(
            root, default_ts=args.default_ts, secret=args.secret, skip=out.resolve() if out else None
        )
    except SyncError as exc:
        print(f"kubemill sync: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.errors:
        for error in result.errors:
            print(f"error: {error}", file=sys.stderr)
        print(
            f"kubemill sync: {len(result.errors)} file(s) cannot be synced; nothing written", file=sys.stderr
        )
        return 1
    if out is None:
        sys.stdout.write("".join(f"---\n{to_yaml(m)}" for m in result.manifests))
    else:
        removed = write_output(out, render(result, namespace=args.namespace))
        counts: dict[str, int] = {}
        for manifest in result.manifests:
            counts[manifest["kind"]] = counts.get(manifest["kind"], 0) + 1
        summary = ", ".join(f"{counts[k]} {k}" for k in ORDER if k in counts) or "nothing"
        print(
            f"kubemill sync: {summary} in {out}" + (f"; removed {len(removed)}" if removed else ""),
            file=sys.stderr,
        )
    if result.secret_keys:
        keys = ", ".join(sorted(result.secret_keys))
        print(f"kubemill sync: secret values come from Secret {args.secret}, keys: {keys}", file=sys.stderr)
    return 0
