"""A script with a dependency: its first run (nothing cached: uv downloads and installs) against its second
(the install is reused), with a lock (`kubemill lock`'s, hash-checked) and without one (the imports).

Plain script (`make bench`): `kubemill run` as a user runs it, each first run with an empty KUBEMILL_HOME,
RUNS times; prints the medians side by side in milliseconds. Needs PyPI: uv downloads `humanize` and
`tabulate`, which the runner's Python lacks.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
KUBEMILL = str(Path(sys.executable).with_name("kubemill"))
CODE = (
    "import humanize\nimport tabulate\n\n\n"
    "def main():\n    return [humanize.__version__, tabulate.__version__]\n"
)


def _run(workspace: Path, home: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [KUBEMILL, "run", "f/bench/deps", "--workspace", str(workspace)],
        env={**os.environ, "KUBEMILL_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return (time.perf_counter() - start) * 1000


def bench(locked: bool) -> tuple[float, float]:
    firsts, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="kubemill-bench-deps-") as tmp:
        workspace = Path(tmp, "ws")
        (workspace / "f" / "bench").mkdir(parents=True)
        (workspace / "wmill.yaml").write_text("defaultTs: bun\n")
        (workspace / "f" / "bench" / "deps.py").write_text(CODE)
        if locked:
            subprocess.run([KUBEMILL, "lock", "--workspace", str(workspace)], check=True, capture_output=True)
        for i in range(RUNS):
            home = Path(tmp, f"home-{i}")  # empty: the first run downloads
            firsts.append(_run(workspace, home))
            seconds.append(_run(workspace, home))
    return statistics.median(firsts), statistics.median(seconds)


def main() -> None:
    print(f"a script importing humanize and tabulate, `kubemill run`, median of {RUNS} (ms):")
    print(f"{'':28} {'first run':>10} {'second run':>11}")
    for locked in (True, False):
        first, second = bench(locked)
        label = "with a lock (hash-checked)" if locked else "without a lock (imports)"
        print(f"{label:28} {first:10.0f} {second:11.0f}")


if __name__ == "__main__":
    main()
