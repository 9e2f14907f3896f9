"""A debugging aid for the operator's memory (issue #16): what the process holds, logged every few seconds.

Set `KUBEMILL_MEMORY_REPORT=<seconds>` and the operator logs, at that interval, its resident memory, the
number of live objects of the most common types, and the sizes of the run executor's per-run records; with
Python's own `PYTHONTRACEMALLOC=1` also the traced memory (current and peak) and the source lines holding the
most of it. Off by default: counting objects walks the whole heap.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import tracemalloc
from collections import Counter
from pathlib import Path

from kubemill.operator.run_executor import RunExecutor

log = logging.getLogger("kubemill.memory")
ENV = "KUBEMILL_MEMORY_REPORT"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def report(executor: RunExecutor, top: int = 12) -> str:
    """One report: RSS, the commonest live object types, the executor's records, traced memory if on."""
    gc.collect()
    types = Counter(type(o).__name__ for o in gc.get_objects())
    lines = [f"rss {rss_mb():.0f} MB; {sum(types.values())} objects; threads {threading.active_count()}"]
    lines.append("types: " + ", ".join(f"{name} {n}" for name, n in types.most_common(top)))
    lines.append("executor: " + ", ".join(f"{k} {n}" for k, n in executor.cache_sizes().items()))
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        lines.append(f"traced: current {current / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB")
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:top]:
            lines.append(f"  {stat}")
    return "\n".join(lines)


def start(executor: RunExecutor, stopping: threading.Event) -> None:
    """Report every `KUBEMILL_MEMORY_REPORT` seconds until `stopping` is set (nothing when it is unset)."""
    seconds = float(os.environ.get(ENV) or 0)
    if seconds <= 0:
        return

    def loop() -> None:
        while not stopping.wait(seconds):
            log.warning("memory report\n%s", report(executor))

    threading.Thread(target=loop, name="kubemill-memory-report", daemon=True).start()
