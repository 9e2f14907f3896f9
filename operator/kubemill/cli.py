"""The `kubemill` command: one entry point, each subcommand implemented in the module that owns it.

Subcommands import their module lazily so `kubemill schema` does not pay for kopf or the Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function, help). Each function takes the parsed args and returns an exit code.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("kubemill.local.cli", "cli_run", "run a script or flow on this machine, without a cluster"),
    "lock": (
        "kubemill.local.lock",
        "cli_lock",
        "pin Python and Bun scripts' dependencies into <name>.script.lock",
    ),
    "schema": ("kubemill.signatures", "cli_schema", "print the JSON Schema derived from a script's main"),
    "crds": ("kubemill.crdgen", "cli_crds", "print (or write) the CustomResourceDefinitions"),
    "operator": ("kubemill.operator", "cli_operator", "run the operator"),
    "worker": ("kubemill.pool_worker", "cli_worker", "run a RunnerPool's worker agent (in its pod)"),
    "sync": ("kubemill.gitops", "cli_sync", "turn a Windmill-layout workspace into manifests"),
    "ui": ("kubemill.ui", "cli_ui", "serve the web UI and the webhook run endpoints"),
    "trigger": ("kubemill.triggers", "cli_trigger", "create the run for a schedule tick (CronJob pods)"),
    # On the cluster, as the kubeconfig's user (kubemill.ctl); also `kubectl kubemill <command>`.
    "submit": ("kubemill.ctl", "cli_submit", "start a run of a Script or Flow on the cluster"),
    "get": ("kubemill.ctl", "cli_get", "list runs, or show one run's tree of steps"),
    "logs": ("kubemill.ctl.logs", "cli_logs", "print a run's stored (masked) log, or a step's"),
    "approve": ("kubemill.ctl", "cli_approve", "approve a suspended step, as yourself"),
    "reject": ("kubemill.ctl", "cli_reject", "reject a suspended step, as yourself"),
    "cancel": ("kubemill.ctl", "cli_cancel", "cancel a run"),
    "retry": ("kubemill.ctl", "cli_retry", "run a finished run again with the same args"),
}

# subcommand -> function that adds its arguments; lives next to the implementation.
_ARGUMENTS = "add_arguments"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, import just that subcommand's module (the others get no arguments)."""
    parser = argparse.ArgumentParser(prog="kubemill", description="Windmill-style workflows on Kubernetes")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, _, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=module)
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        add: Callable[[argparse.ArgumentParser], None] | None = getattr(mod, f"{_ARGUMENTS}_{name}", None)
        if add is not None:
            add(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(chosen if chosen in _COMMANDS else "").parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"kubemill {args.command}: not available in this build", file=sys.stderr)
        return 2
    module, func, _ = _COMMANDS[args.command]
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
