"""Runners, host side: what a run of a script needs outside its container.

`languages` says how each language's runner is started (`command_for`, `env_for`); `rundir` lays out the files
a run reads (code, args.json, resources); `envelope` reads back what the runner wrote (result file,
termination message or last log line). All of it is pure or plain file I/O, importable without kopf or the
Kubernetes client, so `kubemill run` and the operator's Job builder share it. The in-container half lives in
runner_images/<language>/; docs/runners.md is the contract between the two.
"""

from kubemill.runners.envelope import (
    RESULT_PREFIX,
    Envelope,
    EnvelopeError,
    envelope_from_logs,
    envelope_from_termination_message,
    parse_envelope,
)
from kubemill.runners.languages import (
    LANGUAGES,
    RUNNER_DIR,
    RunContext,
    canonical_language,
    code_filename,
    command_for,
    env_for,
)
from kubemill.runners.rundir import (
    ResourcePathError,
    RunFiles,
    build_run_files,
    resource_filename,
    write_run_files,
)

__all__ = [
    "LANGUAGES",
    "RESULT_PREFIX",
    "RUNNER_DIR",
    "Envelope",
    "EnvelopeError",
    "ResourcePathError",
    "RunContext",
    "RunFiles",
    "build_run_files",
    "canonical_language",
    "code_filename",
    "command_for",
    "env_for",
    "envelope_from_logs",
    "envelope_from_termination_message",
    "parse_envelope",
    "resource_filename",
    "write_run_files",
]
