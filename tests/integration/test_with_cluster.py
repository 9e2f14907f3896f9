"""`scripts/with-cluster`: runs a command against a fresh control plane and always tears it down."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_for

pytestmark = pytest.mark.cluster
WITH_CLUSTER = str(REPO / "scripts" / "with-cluster")


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_runs_the_command_with_a_ready_node_and_passes_its_exit_code_on() -> None:
    script = 'echo "$KUBECONFIG"; kubectl get nodes --no-headers; ls "$KUBEMILL_KUBECONFIGS"; exit 3'
    proc = subprocess.run([WITH_CLUSTER, "bash", "-c", script], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 3, proc.stderr
    kubeconfig, node, *files = proc.stdout.splitlines()
    assert node.split()[:2] == ["kubemill-node", "Ready"]
    assert {"alice.kubeconfig", "bob.kubeconfig", "mallory.kubeconfig"} <= set(files)
    state = str(Path(kubeconfig).parents[1])
    assert not Path(state).exists()
    assert processes_mentioning(state) == []


def test_an_interrupt_tears_everything_down() -> None:
    with subprocess.Popen(
        [WITH_CLUSTER, "bash", "-c", 'echo "$KUBECONFIG"; exec sleep 600'],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        kubeconfig = proc.stdout.readline().strip()
        state = str(Path(kubeconfig).parents[1])
        assert any("kube-apiserver" in p for p in processes_mentioning(state))
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        proc.wait(timeout=60)
    assert proc.returncode != 0
    wait_for(lambda: not processes_mentioning(state), 30, "every control-plane process to exit")
    assert not Path(state).exists()
