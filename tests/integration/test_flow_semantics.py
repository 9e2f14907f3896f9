"""Flow fields that act on the cluster as in Windmill, through the real operator and control plane:
`concurrent_limit` holds runs Pending while the limit is reached, `cache_ttl` hands a later run with the same
input the cached result without running a step."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.test_approvals import start_run, status, wait_phase
from tests.integration.test_flows import children, flow, script, step, wait_ready
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

NAP = "import time\n\ndef main(n: int):\n    time.sleep(2)\n    return n\n"
DRAW = "import uuid\n\ndef main(n: int):\n    return f'{n}-{uuid.uuid4()}'\n"


def test_concurrent_limit_runs_one_flowrun_at_a_time(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/limits/nap", NAP))
    cluster.apply(
        flow(
            namespace,
            "f/limits/one",
            [step("nap", "f/limits/nap", n={"type": "javascript", "expr": "flow_input.n"})],
            concurrent_limit=1,
        )
    )
    wait_ready(cluster, namespace, "one")
    names = [f"one-{i}" for i in range(3)]
    for i, name in enumerate(names):
        start_run(cluster, namespace, name, "f/limits/one", {"n": i})
    most = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        phases = [status(cluster, namespace, name).get("phase") or "Pending" for name in names]
        started = [p for p in phases if p in ("Running", "Suspended")]
        most = max(most, len(started))
        assert len(started) <= 1, phases
        if all(p == "Succeeded" for p in phases):
            break
        time.sleep(0.2)
    done = [wait_phase(cluster, namespace, name, "Succeeded", timeout=5) for name in names]
    assert [d["result"] for d in done] == [0, 1, 2]
    spans = sorted(
        (datetime.fromisoformat(d["startedAt"]), datetime.fromisoformat(d["finishedAt"])) for d in done
    )
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    assert most <= 1


def test_flow_cache_ttl_gives_a_second_run_the_cached_result_and_runs_no_step(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/cache/draw", DRAW))
    n = {"type": "javascript", "expr": "flow_input.n"}
    cluster.apply(flow(namespace, "f/cache/cached", [step("draw", "f/cache/draw", n=n)], cache_ttl=600))
    wait_ready(cluster, namespace, "cached")
    seed = uuid.uuid4().int % 10_000  # another run of the suite must not hit this one's entry
    start_run(cluster, namespace, "cached-1", "f/cache/cached", {"n": seed})
    first = wait_phase(cluster, namespace, "cached-1", "Succeeded", timeout=120)
    before = len(children(cluster, namespace))
    start_run(cluster, namespace, "cached-2", "f/cache/cached", {"n": seed})
    second = wait_phase(cluster, namespace, "cached-2", "Succeeded", timeout=60)
    start_run(cluster, namespace, "cached-3", "f/cache/cached", {"n": seed + 1})
    third = wait_phase(cluster, namespace, "cached-3", "Succeeded", timeout=120)
    assert second["result"] == first["result"] and second.get("cached") is True and not second.get("steps")
    assert third["result"] != first["result"] and not third.get("cached")
    assert len(children(cluster, namespace)) == before + 1  # only the third run ran its step
    entries: list[dict[str, Any]] = cluster.get(
        "configmaps", "-n", namespace, "-l", "kubemill.dev/cache=result"
    )["items"]
    assert len(entries) == 2
