"""How long deriving a schema takes: median milliseconds per `derive_schema` call, per language.

Run by `make bench` (not by pytest): `python tests/bench/bench_signatures.py [--runs N]`. The inputs are the
brief's scripts in tests/fixtures/brief, the code users start from; each language's figure is the median over
all its scripts and runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

from kubemill.signatures import derive_schema, language_for_path

BRIEF = Path(__file__).resolve().parents[1] / "fixtures" / "brief"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="calls per script (default 200)")
    runs = parser.parse_args().runs

    scripts: dict[str, list[str]] = defaultdict(list)
    for path in sorted(BRIEF.iterdir()):
        scripts[language_for_path(str(path))].append(path.read_text())

    print(f"{'language':<10} {'scripts':>7} {'lines':>6} {'median ms':>10} {'p95 ms':>8}")
    for language, codes in sorted(scripts.items()):
        for code in codes:  # warm up: parsers are built on first use
            derive_schema(language, code)
        samples: list[float] = []
        for _ in range(runs):
            for code in codes:
                start = time.perf_counter()
                derive_schema(language, code)
                samples.append((time.perf_counter() - start) * 1000)
        lines = sum(c.count("\n") for c in codes) // len(codes)
        p95 = statistics.quantiles(samples, n=20)[-1]
        print(f"{language:<10} {len(codes):>7} {lines:>6} {statistics.median(samples):>10.3f} {p95:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
