"""The pool workers' admission policy agrees with the claim protocol and names what the operator writes.

What the policy admits and refuses is tested on the control plane (tests/adversarial/test_pool_identity.py);
here: that the file shipped is the generated one, that the annotations and moves it allows are exactly those
of the worker's own patches, and that the account it matches is the one the operator labels offered Jobs with.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from kubemill.k8s import pool_admission
from kubemill.k8s import pools as kpools

from tests.unit.test_pools import job

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_the_policy_file_is_current() -> None:
    path = REPO / "config" / "admission" / "pool-jobs-policy.yaml"
    assert path.read_text() == pool_admission.admission_policy_yaml(), (
        "regenerate config/admission/pool-jobs-policy.yaml from kubemill.k8s.pool_admission "
        "(and run charts/kubemill/sync-files)"
    )


def _annotation(path: str) -> str:
    prefix = "/metadata/annotations/"
    assert path.startswith(prefix), path
    return path[len(prefix) :].replace("~1", "/").replace("~0", "~")


def test_the_policy_allows_exactly_the_annotations_and_moves_of_the_workers_patches() -> None:
    worker_patches = {
        "claim": (kpools.claim_patch("w", NOW), "offered"),
        "renew": (kpools.renew_patch("w", NOW), "claimed"),
        "report": (kpools.report_patch("w", "{}"), "claimed"),
        "hand back": (kpools.hand_back_patch("w"), "claimed"),
    }
    written = set()
    for name, (patch, before) in worker_patches.items():
        writes = [op for op in patch if op["op"] != "test"]
        assert all(op["path"].startswith("/metadata/annotations/") for op in writes), name
        written |= {_annotation(op["path"]) for op in writes}
        after = next((op["value"] for op in writes if _annotation(op["path"]) == kpools.STATE), before)
        assert after in pool_admission.TRANSITIONS[before], f"{name}: {before} -> {after}"
    assert written == set(pool_admission.PROTOCOL)
    # The operator's own moves stay the operator's: a worker may not mark a claim lost or fall back.
    assert not any(s in new for new in pool_admission.TRANSITIONS.values() for s in ("lost", "job"))
    assert kpools.OFFERED_AT not in pool_admission.PROTOCOL and kpools.FALLBACK not in pool_admission.PROTOCOL


def test_an_offered_job_names_the_one_account_the_policy_matches() -> None:
    offered = kpools.offered(job(), "py", NOW, "sealed")
    account = offered["spec"]["template"]["metadata"]["labels"][kpools.OFFERED_TO_ACCOUNT]
    assert account == kpools.worker_account("py")
    pattern = re.compile(pool_admission.WORKER_ACCOUNT)
    for pool in ("py", "a-very-long-pool-name-" * 4, "Py.Pool"):
        assert pattern.match(f"system:serviceaccount:team-a:{kpools.worker_account(pool)}"), pool
    assert not pattern.match("system:serviceaccount:kubemill-system:kubemill-operator")
    assert not pattern.match("system:serviceaccount:team-a:default")
