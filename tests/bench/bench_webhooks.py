"""Bench: requests/s and latency (p50, p99) of `kubemill ui`'s run endpoints, on a fresh test control plane.

A plain script (`make bench` runs it). It starts the control plane and `kubemill ui` (as a subprocess, as
deployed), then sends bursts of 500 calls, 50 at a time: to the Windmill-compatible `jobs/run/p/{path}` with
alice's token, and to an HttpTrigger with GitHub-style signatures. Each burst must create exactly 500 runs.
No operator runs: what is measured is accepting a call and creating its run.

    .venv/bin/python tests/bench/bench_webhooks.py [calls] [concurrency]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kubemill.models.triggers import SignatureSpec  # noqa: E402
from kubemill.ui.signing import sign  # noqa: E402

from tests.conftest import Cluster, controlplane  # noqa: E402
from tests.integration import test_webhooks as hooks  # noqa: E402


async def burst(url: str, calls: int, concurrency: int, headers_for) -> tuple[list[int], list[float], float]:  # type: ignore[no-untyped-def]
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            body = json.dumps({"x": i}).encode()
            async with limit:
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers_for(body, i)) as response:
                    await response.read()
                latencies.append(time.perf_counter() - start)
                return response.status

        start = time.perf_counter()
        statuses = await asyncio.gather(*(one(i) for i in range(calls)))
        return list(statuses), latencies, time.perf_counter() - start


def report(what: str, statuses: list[int], latencies: list[float], elapsed: float, created: int) -> None:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{what}: {len(statuses)} calls, {len(statuses) / elapsed:.0f} requests/s, "
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"{statuses.count(201)} accepted, {created} runs created"
    )
    if statuses.count(201) != len(statuses) or created != len(statuses):
        raise SystemExit(f"{what}: runs were lost or refused")


def main(calls: int = 500, concurrency: int = 50) -> None:
    with controlplane.running() as plane:
        cluster = Cluster(plane)
        hooks.install_crds_and_roles(cluster)
        ns = "bench"
        cluster.kubectl("create", "namespace", ns)
        cluster.kubectl(
            "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice@example.com", "-n", ns
        )
        for manifest in hooks.definitions(ns):
            cluster.apply(manifest)
        cluster.kubectl(
            "create", "secret", "generic", "signing", f"--from-literal=key={hooks.KEY.decode()}", "-n", ns
        )
        cluster.apply(hooks.trigger(ns, "bench", "bench/push", signature={"format": "github"}))
        workdir = Path(tempfile.mkdtemp(prefix="kubemill-bench-ui-"))
        server = hooks.UiServer(cluster, workdir, hooks.webhooks_identity(cluster, ns, workdir))
        server.start()
        try:
            alice = hooks.bearer(cluster, "alice")
            url = f"{server.url}/api/w/{ns}/jobs/run/p/{hooks.SCRIPT_PATH}"
            statuses, latencies, elapsed = asyncio.run(burst(url, calls, concurrency, lambda body, i: alice))
            report("jobs/run/p (bearer token)", statuses, latencies, elapsed, len(hooks.runs(cluster, ns)))

            spec = SignatureSpec(format="github")
            signed = lambda body, i: sign(spec, hooks.KEY, body, time.time(), delivery=f"d-{i}")  # noqa: E731
            url = f"{server.url}/api/h/{ns}/bench/push"
            statuses, latencies, elapsed = asyncio.run(burst(url, calls, concurrency, signed))
            created = len(hooks.runs(cluster, ns, selector="kubemill.dev/http-trigger=bench"))
            report("HttpTrigger (github signature)", statuses, latencies, elapsed, created)
        finally:
            server.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
